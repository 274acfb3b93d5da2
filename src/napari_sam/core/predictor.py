"""SAM prediction from points, boxes and masks, on images of any size, each region embedded once.

Usage::

    predictor = Predictor.from_pretrained("facebook/sam-vit-base")
    predictor.set_image(image, contrast_limits=(100, 4000))   # lazy: nothing is read or encoded yet
    prediction = predictor.predict(points=[[120, 64]], point_labels=[1])
    mask = prediction.best_masks()[0]                          # (h, w) bool over prediction.window

A small image is seen whole, resized to the model's input. A large one (see
:class:`~napari_sam.core.settings.TilingSettings`) is seen in native-resolution (or, as a checkpoint asks,
magnified) tiles (:mod:`~napari_sam.core.image.frames`): a prompt is decoded in the tile that holds it best and, when
its mask reaches that tile's inner border, again in a window centred on the object, so that objects crossing tile
borders come out whole. Embeddings are kept in memory (:class:`EmbeddingCache`) and, when a store is attached, on disk.

All positions are (row, col) in the image's data pixels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .decoding import FrameDecoder, InstanceHead, Prediction, PromptBatch, check_prompts, load_head
from .embeddings import CachedEmbedding, EmbeddingCache, FrameEmbeddings
from .errors import EncoderNeeded
from .image import ImagePlan, display_rgb, model_input, open_image
from .image.frames import Frame, Tiling, prompt_extent, tiling_for, touches_inner_edge, whole_frame
from .model import (
    DEFAULT_CHECKPOINT,
    FAMILIES,
    ConceptModel,
    ModelGeometry,
    Recommendations,
    load_sam,
    load_tokenizer,
    read_recommendations,
    resolve_checkpoint,
)
from .settings import TilingSettings

__all__ = ["Predictor"]

#: How many times a prompt's frame grows around an object that reaches its inner border.
MAX_GROWTH = 2


class Predictor:
    """Owns a SAM model and the embeddings of the current image's frames; predicts masks from prompts.

    Thread-safe: ``set_image`` and ``predict`` may be called from worker threads; calls are serialised.

    Attributes:
        recommended: the settings the checkpoint recommends for segment everything, propagation and refinement
            (``napari_sam.json`` in its folder; the defaults otherwise).
        tiling: how large images are seen (:class:`TilingSettings`); applies to the next ``set_image``.
        store: an :class:`~napari_sam.core.embeddings.store.EmbeddingStore` on disk, or None.
    """

    def __init__(self, model, geometry: ModelGeometry, device: torch.device | str, checkpoint: str = "sam",
                 cache: EmbeddingCache | None = None, recommended: Recommendations | None = None,
                 tiling: TilingSettings | None = None, store=None):
        self.model = model
        self.family = FAMILIES[geometry.family]
        self.checkpoint = checkpoint
        self.recommended = recommended or Recommendations()
        self.geometry = geometry
        self.device = torch.device(device)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.tiling = tiling or TilingSettings()
        self._embeddings = FrameEmbeddings(model, self.family, geometry, self.device, self.cache_key, self.cache,
                                           checkpoint)
        self.store = store
        self._plan: ImagePlan | None = None
        self._decoder = FrameDecoder(model, self.family, geometry)
        self.concept: ConceptModel | None = None  # a SAM3 concept checkpoint's (see workflows.concept)
        self._head: InstanceHead | None = None
        self._lock = threading.RLock()
        self._memory_only = threading.local()  # set in this thread within from_memory()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_CHECKPOINT, device="auto", dtype=None,
                        cache: EmbeddingCache | None = None, tiling: TilingSettings | None = None,
                        store=None) -> Predictor:
        """Load a checkpoint (a bundled name, hub id or ``save_pretrained`` folder; see
        :func:`~napari_sam.core.model.loading.load_sam`) with the settings it recommends."""
        recommended = read_recommendations(resolve_checkpoint(name_or_path), label=os.fspath(name_or_path))
        model, geometry, resolved = load_sam(name_or_path, device=device, dtype=dtype, framing=recommended.image)
        family = FAMILIES[geometry.family]
        if recommended.source == "defaults" and family.amg_defaults:  # the family's own generator's defaults
            recommended = dataclasses.replace(recommended, everything=recommended.everything.replace(
                **dict(family.amg_defaults)), source=f"{family.label}'s generator")
        predictor = cls(model, geometry, resolved, checkpoint=os.fspath(name_or_path), cache=cache,
                        recommended=recommended, tiling=tiling, store=store)
        if family.concept:
            predictor.concept = ConceptModel(model, load_tokenizer(resolve_checkpoint(name_or_path)))
        return predictor

    @property
    def has_head(self) -> bool:
        """Whether the checkpoint has an instance head (see :meth:`instance_head`)."""
        return self._head is not None or self.recommended.instances is not None

    def instance_head(self) -> InstanceHead:
        """The checkpoint's instance head (:mod:`~napari_sam.core.decoding.instance_head`), loaded on first use.

        Raises:
            ValueError: the checkpoint has none (naming how to train one).
            ModelLoadError: its file is missing or corrupt, or it was trained on another encoder.
        """
        with self._lock:
            if self._head is None:
                section = self.recommended.instances
                if section is None:
                    raise ValueError(
                        f"{self.checkpoint} has no instance head, so segment everything cannot use the method "
                        "'instances': train one on annotated images (napari-sam train DATA --instances --model "
                        f"{self.checkpoint} --out FOLDER, or the Train dock's 'instance head'), or use the method "
                        "'grid'.")
                folder = resolve_checkpoint(self.checkpoint)
                self._head = load_head(folder, section, self.model, self.checkpoint, self.device)
            return self._head

    def use_head(self, head: InstanceHead | None) -> None:
        """Use ``head`` as this model's instance head (one just trained; None: the checkpoint's again)."""
        with self._lock:
            self._head = head.to(self.device).eval() if head is not None else None

    def frame_input(self, frame: Frame, plan: ImagePlan | None = None) -> torch.Tensor:
        """The model input (1, 3, S, S) float32 of ``frame`` of an image (default: the current one), as the encoder
        sees it."""
        plan = plan or self._require_image("frame_input")
        rgb = display_rgb(plan.source.read(frame), plan.source.contrast_limits, plan.source.rgb)
        return model_input(rgb, self.geometry, resized=self.geometry.input_size(frame))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def cache_key(self) -> str:
        """What names this model's embeddings in the memory cache: its checkpoint and dtype."""
        return f"{self.checkpoint}:{self.dtype}"

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the current image, or None before ``set_image``."""
        return None if self._plan is None else self._plan.size

    @property
    def tiled(self) -> bool:
        """Whether the current image is seen in tiles."""
        return self._plan is not None and self._plan.tiles is not None

    @property
    def tile_grid(self) -> Tiling | None:
        """The current image's tile grid, or None when it is seen whole."""
        return None if self._plan is None else self._plan.tiles

    def locked(self):
        """A context manager that keeps other threads from changing the current image meanwhile, e.g. around
        ``set_image`` followed by several ``predict`` calls."""
        return self._lock

    @contextlib.contextmanager
    def from_memory(self):
        """A context manager within which this thread's predictions never wait: they use embeddings already in
        memory and raise :class:`~napari_sam.core.errors.EncoderNeeded` where the encoder or the store would be
        needed; entering it while another thread uses the predictor raises it too. For quick decodes on a UI
        thread (``precompute``, ``embed_frames`` and ``prefetch``, whose work is encoding, are not for it)."""
        if not self._lock.acquire(blocking=False):
            raise EncoderNeeded("The predictor is in use by another thread.")
        before, self._memory_only.on = getattr(self._memory_only, "on", False), True
        try:
            yield self
        finally:
            self._memory_only.on = before
            self._lock.release()

    def decode_seconds(self, pixels: int | None = None) -> float | None:
        """What a prompt costs once its image is embedded, in seconds, from the quickest of the latest decodes: the
        decoder, and the full-resolution masks of a frame of ``pixels`` pixels (None: the decodes' own frames);
        None before any decode."""
        return self._decoder.seconds(pixels)

    # --- images and their frames ------------------------------------------------------------------------------

    def plan(self, image, contrast_limits=None, rgb: bool | None = None) -> ImagePlan:
        """How the model sees ``image`` (see :meth:`set_image` for the arguments), without making it current."""
        source = open_image(image, contrast_limits, rgb)
        return ImagePlan(source, tiling_for(source.size, self.tiling, self.geometry))

    def sees_in_tiles(self, size: tuple[int, int]) -> bool:
        """Whether an image (plane) of ``size`` (H, W) would be seen in tiles with the present tiling settings.

        Raises:
            ValueError: tiling settings that do not fit this model (a halo too large for its tile).
        """
        return tiling_for(size, self.tiling, self.geometry) is not None

    def set_image(self, image, contrast_limits=None, rgb: bool | None = None) -> ImagePlan:
        """Make ``image`` the current image. Nothing is read beyond what the contrast limits need, and nothing is
        encoded until a prompt needs it or :meth:`precompute` is called.

        Args:
            image: (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA; a numpy, dask or zarr array (any array-like with
                ``shape``, ``dtype`` and ``__getitem__``) of any integer or float dtype (NaN/inf allowed).
            contrast_limits: (low, high) as the napari layer shows it; None uses robust percentiles (uint8:
                0..255; a large lazy image: over a sample of regions). See :func:`display_rgb`.
            rgb: whether the last axis is colour; None guesses from the shape.

        Returns:
            The image's :class:`ImagePlan`.

        Raises:
            ValueError: for images of unsupported dtype or shape, bad contrast limits or tiling settings.

        An in-memory (numpy) image changed in place afterwards is noticed by the next :meth:`predict` or
        :meth:`embed_frames`: the frames they use are hashed again and embedded anew when their pixels changed. A
        lazy image (dask, zarr) is taken as it was read; give it to ``set_image`` again after changing it.
        """
        plan = self.plan(image, contrast_limits, rgb)
        with self._lock:
            self._plan = plan
        return plan

    def _require_image(self, caller: str) -> ImagePlan:
        if self._plan is None:
            raise RuntimeError(f"No image set: call set_image(image) before {caller}().")
        return self._plan

    def frames(self, region: tuple[int, int, int, int] | None = None, plan: ImagePlan | None = None) -> list[Frame]:
        """The frames of an image (default: the current one) that cover ``region`` ((row0, col0, row1, col1);
        None: all of it): the whole image, or the tiles that overlap the region."""
        plan = plan or self._require_image("frames")
        if plan.tiles is None:
            return [self._whole(plan.size)]
        row0, col0, row1, col1 = region or (0, 0, *plan.size)
        return [frame for frame in plan.tiles.frames()
                if frame.row0 < row1 and row0 < frame.row1 and frame.col0 < col1 and col0 < frame.col1]

    def precompute(self, region: tuple[int, int, int, int] | None = None,
                   progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
                   plan: ImagePlan | None = None) -> int:
        """Embed the frames of an image (default: the current one) that cover ``region`` (None: all); see
        :meth:`embed_frames`."""
        plan = plan or self._require_image("precompute")
        return self.embed_frames(self.frames(region, plan), plan, progress, cancel)

    def embed_frames(self, frames: list[Frame], plan: ImagePlan | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     cancel: Callable[[], bool] | None = None) -> int:
        """Embed ``frames`` of an image (default: the current one), each once, in encoder batches (one frame on a
        CPU; on a GPU as many as half its free memory holds, at most 8, once one frame's peak memory is known);
        returns how many ran the encoder (0: all were in the cache or the store). ``progress(done, total)`` after
        each batch; ``cancel`` is checked before each and returning True stops (the frames done stay embedded)."""
        source = (plan or self._require_image("embed_frames")).source
        source.recheck()  # pixels changed in place since set_image get their own embeddings
        return self._embeddings.embed_batches([(frame, source) for frame in frames], self._lock, progress, cancel)

    def embedding_steps(self, frames: list[Frame], plan: ImagePlan | None = None) -> Iterator[tuple[int, int, int]]:
        """:meth:`embed_frames`, one encoder batch per step: a generator yielding ``(frames done, frames in all, how
        many ran the encoder so far)`` after each batch (for a worker that reports progress by yielding); stopping
        the iteration stops there."""
        source = (plan or self._require_image("embedding_steps")).source
        source.recheck()  # pixels changed in place since set_image get their own embeddings
        yield from self._embeddings.embedding_steps([(frame, source) for frame in frames], self._lock)

    def prefetch(self, planes, contrast_limits=None, rgb: bool | None = None,
                 region: tuple[int, int, int, int] | None = None, max_frames: int | None = None,
                 cancel: Callable[[], bool] | None = None) -> int:
        """Embed other images' frames covering ``region`` into the cache, in encoder batches across them, without
        making any the current image (for the planes next to the shown one). ``planes``: one image or a list of
        images; one that needs more than ``max_frames`` frames is left out. ``cancel`` is checked before each
        batch, as in :meth:`embed_frames`. Returns how many ran the encoder."""
        planes = list(planes) if isinstance(planes, (list, tuple)) else [planes]
        items = []
        for plane in planes:
            plan = self.plan(plane, contrast_limits, rgb)
            frames = self.frames(region, plan)
            if max_frames is None or len(frames) <= max_frames:
                items += [(frame, plan.source) for frame in frames]
        return self._embeddings.embed_batches(items, self._lock, cancel=cancel)

    def frame_embedding(self, frame: Frame, plan: ImagePlan | None = None) -> tuple[CachedEmbedding, bool]:
        """The embedding of ``frame`` of an image (default: the current one) and whether the encoder ran for it:
        from the memory cache, else from the store on disk, else computed (and kept in both)."""
        with self._lock:
            source = (plan or self._require_image("frame_embedding")).source
            return self._embeddings.get(frame, source, memory_only=getattr(self._memory_only, "on", False))

    def stored_frames(self, frames: list[Frame], plan: ImagePlan | None = None) -> int:
        """How many of ``frames`` of an image (default: the current one) the store holds (0 without a store)."""
        source = (plan or self._require_image("stored_frames")).source
        with self._lock:
            return sum(self._embeddings.stored(frame, source) for frame in frames)

    @property
    def store_failures(self) -> tuple[int, str | None]:
        """(how many writes to the store failed, the latest one's error or None): embeddings the store could not
        keep are still served from memory, so only runs that fill the store need to know."""
        return self._embeddings.store_failures

    @property
    def store(self):
        """The :class:`~napari_sam.core.embeddings.store.EmbeddingStore` embeddings are kept in on disk, or None."""
        return self._embeddings.store

    @store.setter
    def store(self, store) -> None:
        self._embeddings.store = store

    # --- prompts ------------------------------------------------------------------------------------------------

    def _whole(self, size: tuple[int, int]) -> Frame:
        """The frame of a whole image of ``size`` (H, W) for this checkpoint."""
        return whole_frame(size, self.geometry.longest_edge, self.geometry.max_upscale)

    def _frame_for(self, plan: ImagePlan, prompts: PromptBatch) -> Frame:
        """The frame a prompt on ``plan``'s image is decoded in: the whole image; else the tile that holds all its
        points and boxes farthest from its inner borders; else a window around them."""
        if plan.tiles is None:
            return self._whole(plan.size)
        rows, cols = prompt_extent(prompts)
        return plan.tiles.frame_holding(rows, cols) or plan.tiles.window_around(rows, cols)

    def frame_for(self, points=None, boxes=None) -> Frame:
        """The frame :meth:`predict` would first decode these prompts in (before growing it around an object that
        reaches its border): the whole image, a tile, or a window around them."""
        with self._lock:
            plan = self._require_image("frame_for")
            return self._frame_for(plan, check_prompts(points, None, boxes, None, plan.size))

    def mask_logits(self, masks: np.ndarray, eps: float = 1e-3, frame: Frame | None = None,
                    offset: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Low-res logits for ``mask_input`` from binary masks drawn on the current image.

        Args:
            masks: (objects, h, w) bool (or (h, w)) in image pixels, their top-left pixel at ``offset`` (row, col);
                by default image-sized masks.
            eps: the mask's fraction inside each low-res pixel is clipped to [eps, 1 - eps] before the logit.
            frame: the frame the logits are for (default: the whole image, or for a tiled image the frame the masks'
                box is decoded in).

        Returns:
            (objects, m, m) float32 logits in the frame's model input (resized, padded, at the mask size).
        """
        with self._lock:
            plan = self._require_image("mask_logits")
            tiles = plan.tiles
            masks = np.asarray(masks, dtype=bool)
            masks = masks[None] if masks.ndim == 2 else masks
            end = (int(offset[0]) + masks.shape[1], int(offset[1]) + masks.shape[2])
            if masks.ndim != 3 or min(offset) < 0 or end[0] > plan.size[0] or end[1] > plan.size[1]:
                raise ValueError(f"Masks of shape {masks.shape[1:]} at {tuple(offset)} do not fit the {plan.size} "
                                 "image.")
            if frame is None and tiles is None:
                frame = self._whole(plan.size)
            elif frame is None:
                rows, cols = np.nonzero(masks.any(axis=0))
                if not len(rows):
                    rows, cols = np.array([0, masks.shape[1] - 1]), np.array([0, masks.shape[2] - 1])
                box = np.array([[rows.min(), cols.min(), rows.max(), cols.max()]], dtype=float) + np.tile(offset, 2)
                frame = self._frame_for(plan, PromptBatch(None, None, box, None))
        return self._decoder.mask_logits(masks, frame, offset, eps)

    def predict(self, points=None, point_labels=None, boxes=None, mask_input=None, multimask: bool = True,
                frame: Frame | None = None, grow: bool = True) -> Prediction:
        """Predict masks for the current image.

        Args:
            points: (n, 2) (row, col) data pixels for one object; or (m, n, 2), each of m objects' own points
                (with m boxes, one each, or none), predicted in one batched call; or None.
            point_labels: (n,) (or (m, n)) 1 positive / 0 negative; None makes every point positive.
            boxes: (m, 4) (row_min, col_min, row_max, col_max): m objects, predicted in one batched call. With
                (n, 2) points, at most one box (box and points describe one object).
            mask_input: (objects, m, m) or (m, m) low-res logits from a previous prediction
                (``Prediction.best_logits()``) or :meth:`mask_logits`, m being ``geometry.mask_size``; on a
                tiled image, pass the ``frame`` they belong to (``prediction.frame``) with them.
            multimask: return 3 candidates per object (True) or the single-mask output (False).
            frame: decode in this frame (the one ``mask_input`` belongs to); None chooses one. A frame that does
                not hold every point and box is replaced by the one they are decoded in, ``mask_input`` moved
                into it.
            grow: on a tiled image, decode again in a larger window when a mask reaches the frame's inner border
                (the object goes on outside it), or at native resolution when the tiles are magnified and the
                object covers more than a quarter of the input, ``mask_input`` moved along; False keeps the first
                frame.

        Returns:
            A :class:`Prediction`: masks at full resolution over the frame the objects were decoded in (the whole
            image for an image seen whole).

        Raises:
            RuntimeError: no image was set.
            ValueError: empty, malformed or outside prompts; see :func:`check_prompts`.
        """
        with self._lock:
            plan = self._require_image("predict")
            plan.source.recheck()  # pixels changed in place since set_image get their own embedding
            prompts = check_prompts(points, point_labels, boxes, mask_input, plan.size, self.geometry.mask_size)
            tiles = plan.tiles if grow else None
            held = frame is not None and frame.holds(*prompt_extent(prompts))
            start = frame if frame is not None and held else self._frame_for(plan, prompts)
            if frame is not None and start != frame:  # the prompts outgrew the frame of their mask input
                prompts = self._moved(prompts, frame, start)
            frame = start
            for _ in range(MAX_GROWTH + 1):
                prediction = self._decoder.predict(self.frame_embedding(frame)[0], frame, prompts, multimask,
                                                   plan.size)
                masks = prediction.best_masks()
                if tiles is None:
                    break
                rows, cols = prompt_extent(prompts, masks, frame)
                if not tiles.too_large(rows, cols) and not touches_inner_edge(masks, frame, plan.size):
                    break
                bigger = tiles.window_around(rows, cols)
                if bigger == frame:
                    break
                prompts, frame = self._moved(prompts, frame, bigger), bigger
            return prediction

    def _moved(self, prompts: PromptBatch, frame: Frame, other: Frame) -> PromptBatch:
        """``prompts`` with their mask input (logits of ``frame``) redrawn as logits of ``other``."""
        if prompts.mask_input is None:
            return prompts
        moved = self._decoder.moved(prompts.mask_input, frame, other)
        return PromptBatch(prompts.points, prompts.point_labels, prompts.boxes, moved)

    def point_grid_logits(self, points_rc: np.ndarray, min_score: float | None = None, frame: Frame | None = None):
        """Decode each of ``points_rc`` as a one-point positive prompt of its own, without upsampling.

        SAM and SAM-HQ decode through :class:`~napari_sam.core.decoding.grid_decoder.GridDecoder` (the same function
        as the model's mask decoder, sharing the prompt-independent work across the points); the other families
        through their own decoder (the family's ``grid_logits``).

        Args:
            points_rc: (b, 2) (row, col) in pixels of ``frame`` (its top-left pixel is (0, 0)).
            min_score: when given, points whose three candidates all have a predicted IoU at or below it get no
                logits (their masks would be filtered out anyway).
            frame: the frame of the current image (default: the whole image).

        Returns:
            ``(logits, scores, kept)`` on the model's device: (k, 3, m, m) float32 low-res logits of the kept
            points, (b, 3) float32 scores of all points, and (k,) the kept points' indices into ``points_rc``.
        """
        with self._lock:
            plan = self._require_image("point_grid_logits")
            frame = frame or self._whole(plan.size)
            return self._decoder.point_grid(self.frame_embedding(frame)[0], points_rc, frame, min_score)
