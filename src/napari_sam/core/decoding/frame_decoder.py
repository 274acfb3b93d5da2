"""A checkpoint's mask decoder on an embedded frame: napari-sam's
:class:`~napari_sam.core.decoding.grid_decoder.GridDecoder` where it reproduces the model's decoder (SAM-1), the model's
own decoder otherwise.

The grid decoder computes the prompt-independent part of the decoder once per embedding and keeps it (for the
latest embedding), so a click costs only the prompt's own part: the same function, several times faster on CPU.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import torch

from ..embeddings import CachedEmbedding
from ..image.frames import Frame, place_in_frame
from .coordinates import decoder_inputs, points_to_model
from .grid_decoder import GridDecoder, PreparedImage
from .prediction import Prediction, downscale_masks, upscale_logits


class FrameDecoder:
    """Decodes prompts and point grids on embedded frames for one model.

    Not thread-safe on its own: the :class:`~napari_sam.core.predictor.Predictor` calls it under its lock.
    """

    def __init__(self, model, family, geometry):
        self.model, self.family, self.geometry = model, family, geometry
        self.grid = GridDecoder(model) if family.grid_decoder else None
        self._prepared: tuple[CachedEmbedding, PreparedImage] | None = None
        self._times: deque = deque(maxlen=16)  # (decoder seconds, masks seconds, frame pixels) of the latest

    def seconds(self, pixels: int | None = None) -> float | None:
        """Seconds a :meth:`predict` call takes (None before any): the quickest of the latest decoders, plus the
        quickest full-resolution masks per pixel times ``pixels`` (None: the quickest whole call)."""
        if not self._times:
            return None
        if pixels is None:
            return min(decoder + masks for decoder, masks, _ in self._times)
        return min(t[0] for t in self._times) + pixels * min(t[1] / t[2] for t in self._times)

    def predict(self, current: CachedEmbedding, frame: Frame, prompts, multimask: bool,
                image_size: tuple[int, int]) -> Prediction:
        """Decode checked ``prompts`` (an ``PromptBatch`` in image pixels) in ``frame``, embedded as ``current``;
        the masks at full resolution over the frame."""
        start = time.perf_counter()
        resized = self.geometry.input_size(frame)
        inputs = decoder_inputs(prompts, frame.offset, frame.size, resized, current.embedding.device,
                                self.model.dtype)
        low_res, scores = self.prompts(current, prompts.n_objects, inputs, multimask)  # (n, c, m, m), (n, c)
        decoded = time.perf_counter()
        with torch.inference_mode():
            n_objects, n_candidates = low_res.shape[:2]
            masks = torch.empty((n_objects, n_candidates, *frame.size), dtype=torch.bool)
            for index in range(n_objects):  # one object at a time bounds the full-size float memory
                masks[index] = (upscale_logits(low_res[index], self.geometry, resized, frame.size) > 0).cpu()
        self._times.append((decoded - start, time.perf_counter() - decoded, frame.size[0] * frame.size[1]))
        return Prediction(masks=masks.numpy(), scores=scores.cpu().numpy(), logits=low_res.cpu().numpy(),
                          frame=frame, image_size=image_size)

    def mask_logits(self, masks: np.ndarray, frame: Frame, offset: tuple[int, int] = (0, 0),
                    eps: float = 1e-3) -> np.ndarray:
        """(objects, m, m) float32 low-res logits in ``frame``'s model input of (objects, h, w) bool masks whose
        top-left pixel is ``offset`` (row, col) of the image (see ``Predictor.mask_logits``)."""
        return downscale_masks(place_in_frame(masks, offset, frame), self.geometry, frame, eps)

    def moved(self, mask_input: np.ndarray, frame: Frame, other: Frame) -> np.ndarray:
        """Low-res logits of ``frame`` redrawn as logits of the frame ``other``: the masks they make, placed there."""
        logits = torch.from_numpy(np.asarray(mask_input, dtype=np.float32))
        masks = (upscale_logits(logits, self.geometry, self.geometry.input_size(frame), frame.size) > 0).numpy()
        return self.mask_logits(masks, other, (frame.row0, frame.col0))

    def _prepare(self, current: CachedEmbedding) -> PreparedImage:
        assert self.grid is not None  # only SAM-1's decoder is prepared
        if self._prepared is None or self._prepared[0] is not current:
            self._prepared = (current, self.grid.prepare(current.embedding))
        return self._prepared[1]

    def prompts(self, current: CachedEmbedding, n_objects: int, inputs: dict, multimask: bool):
        """Decode ``n_objects`` objects' prompts (transformers' keyword inputs, see
        :meth:`~napari_sam.core.model.families.Family.decode`) on the frame embedded as ``current``. Returns float32
        ``(low-res logits (n, c, m, m), predicted IoUs (n, c))``."""
        masks = inputs.get("input_masks")
        if self.grid is None or (masks is not None and n_objects > 1):
            return self.family.decode(self.model, current.embedding, current.extras, n_objects, inputs, multimask)
        prepared = self._prepare(current)
        if masks is not None:  # the mask prompt's dense embedding takes the no-mask embedding's place
            with torch.inference_mode():
                dense = self.model.prompt_encoder.mask_embed(masks)[0]
            prepared = self.grid.prepare(current.embedding, dense, base=prepared)
        return self.grid.decode_prompts(prepared, inputs, multimask)

    def point_grid(self, current: CachedEmbedding, points_rc, frame: Frame, min_score: float | None):
        """One-point positive prompts ``points_rc`` ((b, 2) (row, col) pixels of ``frame``, embedded as
        ``current``) each decoded on its own: ``(logits (k, 3, m, m), scores (b, 3), kept (k,))`` as
        :meth:`~napari_sam.core.predictor.Predictor.point_grid_logits` returns them."""
        xy = points_to_model(np.asarray(points_rc, dtype=np.float64), frame.size, self.geometry.input_size(frame))
        points = torch.tensor(xy, dtype=torch.float32, device=current.embedding.device)
        if self.grid is None:
            return self.family.grid_logits(self.model, current.embedding, current.extras, points, min_score)
        return self.grid.decode_all(self._prepare(current), points, min_score)
