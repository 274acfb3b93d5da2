"""SAM prediction from points, boxes and masks, with the image embedding computed once.

Usage::

    predictor = Predictor.from_pretrained("facebook/sam-vit-base")
    predictor.set_image(image, contrast_limits=(100, 4000))   # runs the encoder, or reuses a cached embedding
    prediction = predictor.predict(points=[[120, 64]], point_labels=[1])
    mask = prediction.best_masks()[0]                          # (H, W) bool

All positions are (row, col) in the image's data pixels.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .coordinates import boxes_to_model, points_to_model
from .embedding_cache import CachedEmbedding, EmbeddingCache, EmbeddingKey, content_signature
from .grid_decoder import GridDecoder, PreparedImage
from .image_preparation import check_contrast_limits, display_rgb, image_layout, model_input, resized_shape
from .model_loading import DEFAULT_CHECKPOINT, ModelGeometry, load_sam, resolve_checkpoint
from .prompts import ObjectPrompts, check_prompts
from .settings import Recommendations, read_recommendations

#: Bytes of image tokens decoded at once in :meth:`Predictor.point_grid_logits`: each prompt has its own copy of
#: the image tokens after the first block, and small chunks keep them in the CPU's caches (SAM ViT-B at 1024,
#: 4 MiB per prompt in float32: one prompt at a time in float32, two in bfloat16, measured fastest on CPU).
DECODER_BYTES = 4 << 20


@dataclass(frozen=True)
class Prediction:
    """Masks for one or more objects, several candidates each.

    Attributes:
        masks: bool, (objects, candidates, H, W), at the image's original size.
        scores: float32, (objects, candidates): the model's predicted IoU of each candidate.
        logits: float32, (objects, candidates, m, m): low-resolution logits (m is the checkpoint's mask size),
            usable as the next call's ``mask_input``.
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray

    def best(self) -> np.ndarray:
        """(objects,) index of the best-scoring candidate of each object."""
        return self.scores.argmax(axis=1)

    def best_masks(self) -> np.ndarray:
        """(objects, H, W) bool: each object's best-scoring mask."""
        return self.masks[np.arange(len(self.masks)), self.best()]

    def best_logits(self) -> np.ndarray:
        """(objects, m, m) float32: each object's best-scoring low-resolution logits."""
        return self.logits[np.arange(len(self.logits)), self.best()]


def upscale_logits(low_res: torch.Tensor, geometry: ModelGeometry, resized_size: tuple[int, int],
                   original_size: tuple[int, int]) -> torch.Tensor:
    """Low-res logits (n, m, m) to logits at the original (n, H, W), as SAM does: to the padded input size,
    crop the padding away, then to the original size (bilinear both times)."""
    logits = F.interpolate(low_res[:, None].float(), size=geometry.pad_size, mode="bilinear", align_corners=False)
    logits = logits[..., : resized_size[0], : resized_size[1]]
    if tuple(resized_size) == tuple(original_size):  # resizing to the same size is the identity
        return logits[:, 0]
    return F.interpolate(logits, size=original_size, mode="bilinear", align_corners=False)[:, 0]


class Predictor:
    """Owns a SAM model and a cache of image embeddings; predicts masks from prompts.

    Thread-safe: ``set_image`` and ``predict`` may be called from worker threads; calls are serialised.

    Attributes:
        recommended: the settings the checkpoint recommends for segment everything, propagation and refinement
            (``napari_sam.json`` in its folder; the defaults otherwise).
    """

    def __init__(self, model, geometry: ModelGeometry, device: torch.device, name: str = "sam",
                 cache: EmbeddingCache | None = None, recommended: Recommendations | None = None):
        self.model = model
        self.recommended = recommended or Recommendations()
        self.geometry = geometry
        self.device = torch.device(device)
        self.name = name
        self.cache = cache if cache is not None else EmbeddingCache()
        self._current: CachedEmbedding | None = None
        self._grid_decoder = GridDecoder(model)
        self._grid: tuple[CachedEmbedding, PreparedImage] | None = None  # the current image, prepared for it
        self._lock = threading.RLock()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_CHECKPOINT, device="auto", dtype=None,
                        cache: EmbeddingCache | None = None) -> Predictor:
        """Load a SAM checkpoint (hub id or ``save_pretrained`` folder); see :func:`load_sam`."""
        model, geometry, resolved = load_sam(name_or_path, device=device, dtype=dtype)
        recommended = read_recommendations(resolve_checkpoint(name_or_path), label=os.fspath(name_or_path))
        return cls(model, geometry, resolved, name=f"{os.fspath(name_or_path)}:{model.dtype}", cache=cache,
                   recommended=recommended)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the current image, or None before ``set_image``."""
        return None if self._current is None else self._current.original_size

    def set_image(self, image: np.ndarray, contrast_limits=None, rgb: bool | None = None) -> bool:
        """Make ``image`` the current image, computing its embedding unless it is cached.

        Args:
            image: (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA; any integer or float dtype (NaN/inf allowed).
            contrast_limits: (low, high) as the napari layer shows it; None uses robust percentiles
                (uint8: 0..255). See :func:`display_rgb`.
            rgb: whether the last axis is colour; None guesses from the shape.

        Returns:
            True when the encoder ran, False when the embedding came from the cache.

        Raises:
            ValueError: for images of unsupported dtype or shape, or bad contrast limits.
        """
        with self._lock:
            entry, computed = self._embedding(image, contrast_limits, rgb)
            self._current = entry
            return computed

    def precompute(self, image: np.ndarray, contrast_limits=None, rgb: bool | None = None) -> bool:
        """Put ``image``'s embedding into the cache without making it the current image (for prefetching).

        Returns True when the encoder ran."""
        with self._lock:
            return self._embedding(image, contrast_limits, rgb)[1]

    def locked(self):
        """A context manager that keeps other threads from changing the current image meanwhile, e.g. around
        ``set_image`` followed by several ``predict`` calls."""
        return self._lock

    def _embedding(self, image, contrast_limits, rgb) -> tuple[CachedEmbedding, bool]:
        image = np.asarray(image)
        has_channels = image_layout(image, rgb)
        limits = None if contrast_limits is None else check_contrast_limits(contrast_limits)
        key = EmbeddingKey(self.name, content_signature(image), limits, has_channels)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, False
        rgb01 = display_rgb(image, limits, has_channels, device=self.device)
        pixels = model_input(rgb01, self.geometry, dtype=self.dtype)
        with torch.inference_mode():
            embedding = self.model.get_image_embeddings(pixels)
        entry = CachedEmbedding(
            embedding=embedding,
            original_size=(int(image.shape[0]), int(image.shape[1])),
            resized_size=resized_shape((image.shape[0], image.shape[1]), self.geometry.longest_edge),
        )
        self.cache.put(key, entry)
        return entry, True

    def reset_image(self) -> None:
        """Forget the current image (cached embeddings stay cached)."""
        with self._lock:
            self._current = None

    def point_grid_logits(self, points_rc: np.ndarray, min_score: float | None = None):
        """Decode each of ``points_rc`` as a one-point positive prompt of its own, without upsampling.

        Uses :class:`~napari_sam.core.grid_decoder.GridDecoder`: the same function as the model's mask decoder,
        sharing the prompt-independent work across the points.

        Args:
            points_rc: (b, 2) (row, col) in the current image's data pixels.
            min_score: when given, points whose three candidates all have a predicted IoU at or below it get no
                logits (their masks would be filtered out anyway).

        Returns:
            ``(logits, scores, kept)`` on the model's device: (k, 3, m, m) float32 low-res logits of the kept
            points, (b, 3) float32 scores of all points, and (k,) the kept points' indices into ``points_rc``.
        """
        with self._lock:
            current = self._require_image("point_grid_logits")
            xy = points_to_model(np.asarray(points_rc, dtype=np.float64), current.original_size,
                                 current.resized_size)
            points = torch.tensor(xy, dtype=torch.float32, device=self.device)
            if self._grid is None or self._grid[0] is not current:
                self._grid = (current, self._grid_decoder.prepare(current.embedding))
            prepared = self._grid[1]
            chunk = max(1, DECODER_BYTES // (prepared.keys.numel() * prepared.keys.element_size()))
            logits, scores, kept = [], [], []
            for start in range(0, len(points), chunk):  # small chunks: the work stays in the caches
                chunk_logits, chunk_scores, chunk_kept = self._grid_decoder.decode(
                    prepared, points[start: start + chunk], min_score)
                logits.append(chunk_logits)
                scores.append(chunk_scores)
                kept.append(chunk_kept + start)
            return torch.cat(logits), torch.cat(scores), torch.cat(kept)

    def _require_image(self, caller: str) -> CachedEmbedding:
        if self._current is None:
            raise RuntimeError(f"No image set: call set_image(image) before {caller}().")
        return self._current

    @property
    def current(self) -> CachedEmbedding | None:
        """The current image's embedding and sizes, or None."""
        return self._current

    def mask_logits(self, masks: np.ndarray, eps: float = 1e-3) -> np.ndarray:
        """Low-res logits for ``mask_input`` from binary masks drawn on the current image.

        Args:
            masks: (objects, H, W) bool (or (H, W)) in the current image's data pixels.
            eps: the mask's fraction inside each low-res pixel is clipped to [eps, 1 - eps] before the logit.

        Returns:
            (objects, m, m) float32 logits in the model's frame (resized, padded, at the mask size).
        """
        with self._lock:
            current = self._require_image("mask_logits")
        masks = np.asarray(masks, dtype=bool)
        masks = masks[None] if masks.ndim == 2 else masks
        if masks.shape[1:] != current.original_size:
            raise ValueError(f"Masks of shape {masks.shape[1:]} do not fit the {current.original_size} image.")
        fraction = torch.from_numpy(masks).to(torch.float32)[:, None]
        fraction = F.interpolate(fraction, size=current.resized_size, mode="bilinear", align_corners=False,
                                 antialias=True)
        pad_h, pad_w = self.geometry.pad_size
        fraction = F.pad(fraction, (0, pad_w - current.resized_size[1], 0, pad_h - current.resized_size[0]))
        fraction = F.adaptive_avg_pool2d(fraction, self.geometry.mask_size)[:, 0].clamp(eps, 1 - eps)
        return torch.logit(fraction).numpy()

    def _model_prompts(self, prompts: ObjectPrompts, current: CachedEmbedding) -> dict:
        """Prompt tensors for ``SamModel``: one batch entry per object, one prompt set each."""
        n_objects = prompts.n_objects
        to_tensor = {"device": self.device}
        inputs: dict = {}
        if prompts.points is not None:
            xy = points_to_model(prompts.points, current.original_size, current.resized_size)
            inputs["input_points"] = torch.tensor(xy, **to_tensor)[None, None].expand(n_objects, 1, -1, -1)
            inputs["input_labels"] = torch.tensor(prompts.point_labels, **to_tensor)[None, None].expand(
                n_objects, 1, -1)
        if prompts.boxes is not None:
            boxes = boxes_to_model(prompts.boxes, current.original_size, current.resized_size)
            inputs["input_boxes"] = torch.tensor(boxes, **to_tensor)[:, None]
        if prompts.mask_input is not None:
            inputs["input_masks"] = torch.tensor(prompts.mask_input, **to_tensor)[:, None].to(self.dtype)
        return inputs

    def predict(self, points=None, point_labels=None, boxes=None, mask_input=None,
                multimask: bool = True) -> Prediction:
        """Predict masks for the current image.

        Args:
            points: (n, 2) (row, col) data pixels for one object, or None.
            point_labels: (n,) 1 positive / 0 negative; None makes every point positive.
            boxes: (m, 4) (row_min, col_min, row_max, col_max): m objects, predicted in one batched call. With
                points, at most one box (box and points describe one object).
            mask_input: (objects, m, m) or (m, m) low-res logits from a previous prediction
                (``Prediction.best_logits()``), m being ``geometry.mask_size``.
            multimask: return 3 candidates per object (True) or the single-mask output (False).

        Returns:
            A :class:`Prediction`, masks at the image's original size.

        Raises:
            RuntimeError: no image was set.
            ValueError: empty, malformed or outside prompts; see :func:`check_prompts`.
        """
        with self._lock:
            current = self._require_image("predict")
            prompts = check_prompts(points, point_labels, boxes, mask_input, current.original_size,
                                    self.geometry.mask_size)
            inputs = self._model_prompts(prompts, current)
            embeddings = current.embedding.expand(prompts.n_objects, -1, -1, -1)
            with torch.inference_mode():
                output = self.model(image_embeddings=embeddings, multimask_output=multimask, **inputs)
                low_res = output.pred_masks[:, 0].float()  # (objects, candidates, m, m)
                scores = output.iou_scores[:, 0].float()
                n_objects, n_candidates = low_res.shape[:2]
                masks = torch.empty((n_objects, n_candidates, *current.original_size), dtype=torch.bool)
                for index in range(n_objects):  # one object at a time bounds the full-size float memory
                    logits = upscale_logits(low_res[index], self.geometry, current.resized_size,
                                            current.original_size)
                    masks[index] = (logits > 0).cpu()
            return Prediction(masks=masks.numpy(), scores=scores.cpu().numpy(), logits=low_res.cpu().numpy())
