"""Segment everything: SAM's automatic mask generator, filtering at low resolution, on images of any size; or a
checkpoint's instance head (:mod:`~napari_sam.core.workflows.instances`) in the same frames, merged the same way.

The semantics are those of Meta's ``SamAutomaticMaskGenerator`` and transformers' ``mask-generation`` pipeline:
a point grid per crop, three candidates per point, the predicted-IoU and stability-score filters (a threshold of
0 turns a filter off), box NMS within and across crops, the crop-edge rule, and optional small-region/hole
removal. What differs is the cost:

- candidates are filtered on their low-resolution logits first; only survivors are upsampled (in chunks), to
  compute their exact stability score, box and mask;
- NMS runs in torch on the model's device (:func:`~napari_sam.core.boxes.nms`), no torchvision;
- each crop is a frame of the predictor's image, embedded exactly once;
- objects are kept as a box and a mask cropped to it (:class:`~napari_sam.core.objects.MaskObject`), never as
  image-sized masks, and painted into a labels array at the end (which may be a zarr array on disk).

A large image (see :class:`~napari_sam.core.settings.TilingSettings`) is segmented in its native-resolution tiles
instead of crops: the tiles overlap by twice the halo, an object cut by a tile's inner border is dropped there
(the crop-edge rule, a few pixels wide) and kept from the tile that holds it whole, and duplicates across tiles are
merged by box NMS, so each object appears once, with one id. An object that no tile holds whole (larger than a
tile's core) is recovered from its cut candidates: decoded again in a window around it, as a prompt is
(:func:`recover_cut_objects`). Memory is bounded by a few tiles plus the labels.

The ``method`` setting chooses how each frame's objects are found: ``grid`` (the generator above), ``instances``
(the instance head's maps split by watershed: one pass of a small network per frame instead of a thousand
decoded prompts) or ``instances+sam`` (the head's objects as box and point prompts to SAM's decoder). Tiles, their
edge rule, the recovery of objects larger than a tile and the merge are the same for all three.

All positions are (row, col) in the image's data pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from ..boxes import box_area, box_near_crop_edge, masks_to_boxes, nms
from ..decoding import upscale_logits
from ..errors import SegmentationCancelled
from ..image import Frame, ImagePlan, fitted_scale, whole_frame
from ..memory import release_freed_memory
from ..objects import MaskObject, cleaned, cropped, paint_labels
from ..predictor import Predictor
from ..settings import EverythingSettings
from .instances import frame_instances, refined_by_sam

#: Tiles decoded between two returns of freed memory to the system (each takes ~6 ms; a tile ~150 ms).
TRIM_EVERY = 8

__all__ = ["CutCandidates", "EverythingResult", "FrameObjects", "explain_empty", "frame_count", "frame_stability",
           "merge_frames", "recover_cut_objects", "segment_everything", "segment_frames", "stability_score",
           "thresholds"]

#: Survivors are upsampled this many full-resolution pixels at a time (bounds the float memory: 64 MiB).
UPSAMPLE_PIXELS = 16 * 1024 * 1024
#: The low-resolution stability pre-filter keeps candidates within this margin of the threshold.
STABILITY_MARGIN = 0.1
#: Meta's crop-edge rule: a box within this many pixels of a crop's inner edge is cut by it.
CROP_EDGE_PIXELS = 20.0
#: A cut candidate is an object a tile holds whole when this share of its box lies within that object's box.
WITHIN = 0.9


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n², 2) (row, col) points evenly spaced in [0, 1]², column running fastest (Meta's order)."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    rows = np.repeat(side, n_per_side)
    cols = np.tile(side, n_per_side)
    return np.stack([rows, cols], axis=1)


def generate_crop_boxes(size: tuple[int, int], n_layers: int, overlap_ratio: float):
    """Crop boxes (row0, col0, row1, col1), end-exclusive, and their layer index: the whole image, then
    (2^(i+1))² overlapping crops for layer i+1 (Meta's and transformers' rule)."""
    height, width = size
    boxes, layers = [[0, 0, height, width]], [0]
    short_side = min(height, width)
    for layer in range(n_layers):
        per_side = 2 ** (layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = int(math.ceil((overlap * (per_side - 1) + width) / per_side))
        crop_h = int(math.ceil((overlap * (per_side - 1) + height) / per_side))
        lefts = [int((crop_w - overlap) * i) for i in range(per_side)]
        tops = [int((crop_h - overlap) * i) for i in range(per_side)]
        for left in lefts:  # x outer, y inner, as Meta's itertools.product(x0, y0)
            for top in tops:
                boxes.append([top, left, min(top + crop_h, height), min(left + crop_w, width)])
                layers.append(layer + 1)
    return boxes, layers


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks at ``threshold + offset`` and ``threshold - offset``; logits (n, H, W) -> (n,)."""
    intersections = (logits > threshold + offset).sum(dim=(-2, -1), dtype=torch.int32)
    unions = (logits > threshold - offset).sum(dim=(-2, -1), dtype=torch.int32)
    return intersections / unions.clamp(min=1)


def thresholds(settings: EverythingSettings) -> tuple[float | None, float | None]:
    """The (predicted-IoU, stability) thresholds of ``settings``; None for a filter that 0 turns off, as in Meta's
    generator."""
    return (settings.pred_iou_thresh if settings.pred_iou_thresh > 0 else None,
            settings.stability_score_thresh if settings.stability_score_thresh > 0 else None)


def frame_stability(logits: torch.Tensor, geometry, frame: Frame, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A frame's low-resolution mask logits (n, m, m) upscaled to the frame's pixels, and their stability scores
    there (SAM measures stability at full resolution)."""
    full = upscale_logits(logits, geometry, geometry.input_size(frame), frame.size)
    return full, stability_score(full, 0.0, offset)


class _Rows:
    """Candidates held as arrays of one row per candidate, ``scores`` among them."""

    scores: Any

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class Candidates(_Rows):
    """Candidate masks, one row each, all on one device.

    Attributes:
        logits: (n, m, m) float16 low-resolution mask logits in their crop's model frame.
        scores: (n,) float32 predicted IoU.
        stability: (n,) float32 stability score (computed at the crop's full resolution).
        boxes: (n, 4) float32 (row_min, col_min, row_max, col_max), inclusive, in image data pixels.
        points: (n, 2) float32 (row, col) of the grid point that prompted the candidate, in image data pixels.
        crops: (n,) int64 index of the crop the candidate comes from.
    """

    logits: torch.Tensor
    scores: torch.Tensor
    stability: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    crops: torch.Tensor

    def __getitem__(self, keep) -> Candidates:
        """The candidates selected by ``keep`` (a bool mask or indices)."""
        return Candidates(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    @classmethod
    def empty(cls, mask_size: int, device) -> Candidates:
        def zeros(*shape, dtype=torch.float32):
            return torch.zeros(shape, dtype=dtype, device=device)

        return cls(logits=zeros(0, mask_size, mask_size, dtype=torch.float16), scores=zeros(0), stability=zeros(0),
                   boxes=zeros(0, 4), points=zeros(0, 2), crops=zeros(0, dtype=torch.long))

    @classmethod
    def cat(cls, parts: list[Candidates], mask_size: int, device) -> Candidates:
        """All ``parts`` in one (an empty record when there are none)."""
        parts = [part for part in parts if len(part)]
        if not parts:
            return cls.empty(mask_size, device)
        return cls(**{f.name: torch.cat([getattr(part, f.name) for part in parts]) for f in fields(cls)})


@dataclass
class CutCandidates(_Rows):
    """Candidates of a tiled pass that passed the filters but were cut by a tile's inner border, as numpy arrays:
    ``points`` (n, 2) (row, col) image pixels of their grid points, ``candidate`` (n,) which of the point's masks,
    ``scores`` (n,) their predicted IoU, ``boxes`` (n, 4) inclusive (row_min, col_min, row_max, col_max) image
    boxes of the part their tile sees. An object that no tile holds whole is recovered from them
    (:func:`recover_cut_objects`)."""

    points: np.ndarray
    candidate: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    @classmethod
    def cat(cls, parts: list[CutCandidates]) -> CutCandidates:
        def joined(name: str, width: tuple[int, ...], dtype) -> np.ndarray:
            values = [getattr(part, name) for part in parts]
            return (np.concatenate(values) if values else np.zeros(0, dtype)).astype(dtype).reshape(-1, *width)

        return cls(joined("points", (2,), np.float32), joined("candidate", (), np.int64),
                   joined("scores", (), np.float32), joined("boxes", (4,), np.float32))


def _chunk(height: int, width: int) -> int:
    """How many masks of (height, width) to upsample at once."""
    return max(1, UPSAMPLE_PIXELS // max(1, height * width))


@dataclass
class EverythingResult:
    """Every object found, ordered by predicted IoU (best first).

    Attributes:
        objects: one :class:`MaskObject` (a box and the mask cropped to it) per object.
        scores: (n,) predicted IoU; stability_scores: (n,).
        boxes: (n, 4) (row_min, col_min, row_max, col_max), inclusive.
        point_coords: (n, 2) (row, col) of the grid point that prompted each mask.
        labels: (H, W) instance image (uint32 by default, or the ``out`` array it was painted into), 0 =
            background; label k is ``objects[k - 1]``, painted from the largest object to the smallest so that
            small objects stay visible.
        image_size: (H, W).
        stats: what the filters saw, to explain an empty result: ``candidates`` (decoded), ``best_score`` (the
            highest predicted IoU), ``passed_score`` (candidates above the IoU threshold) and ``passed_both``
            (those also above the stability threshold, before NMS and the crop-edge rule).
    """

    objects: list[MaskObject]
    scores: np.ndarray
    stability_scores: np.ndarray
    boxes: np.ndarray
    point_coords: np.ndarray
    labels: object
    image_size: tuple[int, int]
    stats: dict = field(default_factory=dict)

    @property
    def masks(self) -> np.ndarray:
        """(n, H, W) bool: every object at the image's size. This materialises image-sized masks; prefer
        ``objects`` (or ``labels``) for large images."""
        masks = np.zeros((len(self.objects), *self.image_size), dtype=bool)
        for index, obj in enumerate(self.objects):
            masks[index, obj.rows, obj.cols] = obj.mask
        return masks

    def features(self) -> dict[str, np.ndarray]:
        """One row per object, as columns: label, area, score, stability and its box (row/col min/max)."""
        columns = {"label": np.arange(1, len(self.objects) + 1),
                   "area": np.array([obj.area for obj in self.objects], dtype=np.int64),
                   "score": self.scores, "stability": self.stability_scores}
        for index, name in enumerate(("box_row_min", "box_col_min", "box_row_max", "box_col_max")):
            columns[name] = self.boxes[:, index]
        return columns


class _Steps:
    """Counts decoded batches over the whole run, reports them, checks for cancellation, and keeps what the
    filters saw (:attr:`EverythingResult.stats`)."""

    def __init__(self, total: int, progress, cancel):
        self.done, self.total, self.progress, self.cancel = 0, total, progress, cancel
        self.stats = {"candidates": 0, "best_score": float("-inf"), "passed_score": 0, "passed_both": 0}

    def saw(self, scores: torch.Tensor, passed_score: int) -> None:
        """All decoded scores of a batch, and how many candidates passed the IoU filter."""
        self.stats["candidates"] += scores.numel()
        if scores.numel():
            self.stats["best_score"] = max(self.stats["best_score"], float(scores.max()))
        self.stats["passed_score"] += passed_score

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise SegmentationCancelled()

    def advance(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


@dataclass(frozen=True)
class _Pass:
    """The frames a run decodes: Meta's crops (the whole image, then crop layers) or a large image's tiles, each
    with its grid of points (in the frame's pixels) and the width of its crop-edge rule, and the image's size."""

    frames: list[Frame]
    grids: list[np.ndarray]
    edge: float
    tiled: bool
    image_size: tuple[int, int]


def _grid_pass(predictor: Predictor, image: ImagePlan, settings: EverythingSettings) -> _Pass:
    """The frames that segment everything decodes in ``image`` (the predictor's current image)."""
    size, input_size = image.size, predictor.geometry.longest_edge
    sides = settings.grid_sides()
    if image.tiles is not None:
        frames = predictor.frames(plan=image)
        grid = build_point_grid(sides[0])
        return _Pass(frames, [grid * np.array(frame.size) for frame in frames], max(2.0, image.tiles.halo / 8), True,
                     size)
    boxes, layers = generate_crop_boxes(size, settings.crop_n_layers, settings.crop_overlap_ratio)
    upscale = predictor.geometry.max_upscale
    frames = [whole_frame(size, input_size, upscale)] + [
        Frame(r0, c0, r1, c1, fitted_scale((r1 - r0, c1 - c0), input_size, upscale)) for r0, c0, r1, c1 in boxes[1:]]
    grids = [build_point_grid(sides[layer]) * np.array(frame.size) for frame, layer in zip(frames, layers)]
    return _Pass(frames, grids, CROP_EDGE_PIXELS, False, size)


def _decode_frame(predictor: Predictor, grid_pass: _Pass, index: int, settings: EverythingSettings,
                  steps: _Steps) -> tuple[Candidates, CutCandidates]:
    """Decode the point grid of frame ``index``: the candidates that pass, before NMS, and (in tiles) those that
    passed the filters but are cut by the tile's inner border."""
    frame, points_rc = grid_pass.frames[index], grid_pass.grids[index]
    geometry = predictor.geometry
    iou_filter, stability_filter = thresholds(settings)
    offset_value = settings.stability_score_offset
    valid_rows = math.ceil(geometry.input_size(frame)[0] * geometry.mask_size / geometry.pad_size[0])
    valid_cols = math.ceil(geometry.input_size(frame)[1] * geometry.mask_size / geometry.pad_size[1])
    offset = torch.tensor([frame.row0, frame.col0] * 2, dtype=torch.float32, device=predictor.device)
    box = [frame.row0, frame.col0, frame.row1, frame.col1]
    image_box = [0, 0, *grid_pass.image_size]
    parts, cuts = [], []
    for start in range(0, len(points_rc), settings.points_per_batch):
        steps.check()
        points = points_rc[start: start + settings.points_per_batch]
        logits, scores, kept = predictor.point_grid_logits(points, min_score=iou_filter, frame=frame)
        point_index = kept.repeat_interleave(scores.shape[1])  # the point of each candidate
        candidate = torch.arange(len(point_index), device=kept.device) % scores.shape[1]  # which of its masks
        all_scores, logits, scores = scores, logits.flatten(0, 1), scores[kept].flatten()
        keep = torch.ones_like(scores, dtype=torch.bool) if iou_filter is None else scores > iou_filter
        steps.saw(all_scores, int(keep.sum()))
        if stability_filter is not None:  # a cheap pre-filter on the valid low-res region
            rough = stability_score(logits[:, :valid_rows, :valid_cols], 0.0, offset_value)
            keep &= rough > stability_filter - STABILITY_MARGIN
        logits, scores, point_index, candidate = logits[keep], scores[keep], point_index[keep], candidate[keep]
        grid = torch.as_tensor(points, dtype=torch.float32, device=logits.device)
        step = _chunk(*frame.size)
        for chunk in range(0, len(logits), step):
            part = logits[chunk: chunk + step]
            full, stability = frame_stability(part, geometry, frame, offset_value)
            passed = (full > 0).flatten(1).any(dim=1)
            if stability_filter is not None:
                passed &= stability > stability_filter
            steps.stats["passed_both"] += int(passed.sum())
            boxes = masks_to_boxes(full > 0) + offset
            cut = box_near_crop_edge(boxes, box, image_box, atol=grid_pass.edge)
            if grid_pass.tiled:  # kept aside: an object that no tile holds whole is recovered from them
                rows = torch.nonzero(passed & cut).flatten()
                cuts.append(CutCandidates((grid[point_index[chunk: chunk + step][rows]] + offset[:2]).cpu().numpy(),
                                          candidate[chunk: chunk + step][rows].cpu().numpy(),
                                          scores[chunk: chunk + step][rows].cpu().numpy(), boxes[rows].cpu().numpy()))
            passed &= ~cut
            chosen = torch.nonzero(passed).flatten()
            parts.append(Candidates(
                logits=part[chosen].to(torch.float16), scores=scores[chunk: chunk + step][chosen],
                stability=stability[chosen], boxes=boxes[chosen],
                points=grid[point_index[chunk: chunk + step][chosen]] + offset[:2],
                crops=torch.full((len(chosen),), index, dtype=torch.long, device=logits.device)))
        steps.advance()
    return Candidates.cat(parts, geometry.mask_size, predictor.device), CutCandidates.cat(cuts)


def _instance_frame(predictor: Predictor, image: ImagePlan, grid_pass: _Pass, index: int,
                    settings: EverythingSettings, steps: _Steps):
    """The instance head's objects of frame ``index`` (refined by SAM for ``instances+sam``), as
    :func:`_as_objects` returns a frame's kept candidates, and the objects cut by the frame's inner border (kept
    aside, as the grid's, so that an object no tile holds whole is recovered)."""
    steps.check()
    frame = grid_pass.frames[index]
    found = frame_instances(predictor, frame, settings, image)
    if settings.method == "instances+sam" and found.objects:
        found = refined_by_sam(predictor, frame, found)
    boxes = np.array([obj.box for obj in found.objects], np.float32).reshape(-1, 4)
    steps.saw(torch.from_numpy(found.scores), len(found.objects))
    steps.stats["passed_both"] += len(found.objects)
    cut = box_near_crop_edge(torch.from_numpy(boxes), [frame.row0, frame.col0, frame.row1, frame.col1],
                             [0, 0, *grid_pass.image_size], atol=grid_pass.edge).numpy()
    whole = np.nonzero(~cut)[0]
    cuts = CutCandidates(found.points[cut], np.full(int(cut.sum()), -1, np.int64), found.scores[cut], boxes[cut]) \
        if grid_pass.tiled else CutCandidates.cat([])
    steps.advance()
    values = (found.scores[whole], found.scores[whole], boxes[whole], found.points[whole])
    return [found.objects[i] for i in whole], values, np.full(len(whole), index, np.int64), cuts


def segment_everything(predictor: Predictor, image, settings: EverythingSettings | None = None, *,
                       contrast_limits=None, rgb: bool | None = None, out=None, first_id: int = 1,
                       progress: Callable[[int, int], None] | None = None,
                       cancel: Callable[[], bool] | None = None, **overrides) -> EverythingResult:
    """Find every object in a 2D image (gray, RGB or RGBA; any dtype and size), as SAM's automatic mask generator.

    Args:
        predictor: the model to use; ``image`` becomes its current image, seen whole or in tiles as its
            ``tiling`` settings say.
        image: (H, W), (H, W, 3) or (H, W, 4) array-like (numpy, dask, zarr): only the frames decoded are read.
        settings: the generator's settings (:class:`~napari_sam.core.settings.EverythingSettings`; None: those the
            checkpoint recommends, ``predictor.recommended.everything``, as the dock shows them). ``overrides``
            replace single settings by name, e.g. ``points_per_side=16``. On a tiled image the grid is
            ``points_per_side`` per tile, and crop layers are not used (tiles are native resolution already).
        contrast_limits, rgb: as for :meth:`Predictor.set_image`; the same limits serve every frame.
        out: an (H, W) integer array-like (e.g. a zarr array on disk) to paint the labels into; None: a new uint32
            numpy array. ``first_id``: the label of the first object (the others follow).
        progress: called as ``progress(done, total)`` after every batch of points.
        cancel: checked between batches; returning True raises :class:`SegmentationCancelled`.

    Raises:
        ValueError: an unknown or invalid setting, or an unsupported image.

    The same result comes from :func:`segment_frames` over groups of the frames (in other processes, say),
    :func:`recover_cut_objects` of their parts (tiled images) and :func:`merge_frames` of all of them.
    """
    settings = (settings or predictor.recommended.everything).replace(**overrides)
    parts = [segment_frames(predictor, image, settings, contrast_limits=contrast_limits, rgb=rgb, progress=progress,
                            cancel=cancel)]
    if parts[0].tiled:
        parts.append(recover_cut_objects(predictor, image, parts, settings, contrast_limits=contrast_limits, rgb=rgb,
                                         cancel=cancel))
    return merge_frames(parts, settings, out=out, first_id=first_id)


@dataclass
class FrameObjects:
    """The objects segment everything keeps from some frames of one image, before the merge across frames.

    Attributes:
        objects: :class:`MaskObject` per object; scores, stability: (n,) float32; boxes: (n, 4) (row_min, col_min,
            row_max, col_max); points: (n, 2) (row, col) of each object's grid point; frames: (n,) int64, the index
            of the frame each object came from.
        frame_areas: (n_frames,) float32, the area of every frame of the image's pass (not only these).
        image_size: (H, W); tiled: whether the frames are tiles (else Meta's crops).
        stats: what the filters saw (see :attr:`EverythingResult.stats`).
        cut: the candidates of these tiles cut by their inner borders (none for crops).
    """

    objects: list[MaskObject]
    scores: np.ndarray
    stability: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    frames: np.ndarray
    frame_areas: np.ndarray
    image_size: tuple[int, int]
    tiled: bool
    stats: dict
    cut: CutCandidates = field(default_factory=lambda: CutCandidates.cat([]))


def frame_count(predictor: Predictor, image, settings: EverythingSettings | None = None, *, contrast_limits=None,
                rgb: bool | None = None) -> int:
    """How many frames segment everything decodes in ``image`` (its tiles, or the whole image and its crops):
    :func:`segment_frames` takes frame indices below this. Reads nothing when contrast limits are given."""
    with predictor.locked():
        plan = predictor.set_image(image, contrast_limits=contrast_limits, rgb=rgb)
        return len(_grid_pass(predictor, plan, settings or predictor.recommended.everything).frames)


def segment_frames(predictor: Predictor, image, settings: EverythingSettings, frames=None, *, contrast_limits=None,
                   rgb: bool | None = None, progress: Callable[[int, int], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> FrameObjects:
    """Segment everything in the frames ``frames`` (indices; None: all) of ``image``, each frame's duplicates
    removed; the arguments are those of :func:`segment_everything`."""
    with predictor.locked():  # the image stays the current one for the whole run
        image_plan = predictor.set_image(image, contrast_limits=contrast_limits, rgb=rgb)
        grid_pass = _grid_pass(predictor, image_plan, settings)
        indices = range(len(grid_pass.frames)) if frames is None else [int(i) for i in frames]
        grid = settings.method == "grid"
        if not grid:
            predictor.instance_head()  # a checkpoint without a (usable) head is named before any work
        steps = _Steps(sum(math.ceil(len(grid_pass.grids[i]) / settings.points_per_batch) if grid else 1
                           for i in indices), progress, cancel)
        kept, cuts = [], []
        for count, index in enumerate(indices):
            if grid:
                found, cut = _decode_frame(predictor, grid_pass, index, settings, steps)
                found = found[nms(found.boxes, found.scores, settings.box_nms_thresh)]
                kept.append(_as_objects(predictor, grid_pass, found))
            else:
                objects, values, frames, cut = _instance_frame(predictor, image_plan, grid_pass, index, settings,
                                                               steps)
                kept.append((objects, values, frames))
            cuts.append(cut)
            if grid_pass.tiled and count % TRIM_EVERY == TRIM_EVERY - 1:
                release_freed_memory()  # thousands of tiles would otherwise fragment the heap
    values = [np.concatenate([part[1][i] for part in kept]) if kept else np.zeros((0,)) for i in range(4)]
    areas = box_area(torch.tensor([[f.row0, f.col0, f.row1, f.col1] for f in grid_pass.frames],
                                  dtype=torch.float32))
    return FrameObjects(
        objects=[obj for part in kept for obj in part[0]], scores=np.asarray(values[0], np.float32),
        stability=np.asarray(values[1], np.float32), boxes=np.asarray(values[2], np.float32).reshape(-1, 4),
        points=np.asarray(values[3], np.float32).reshape(-1, 2),
        frames=np.concatenate([part[2] for part in kept]) if kept else np.zeros(0, dtype=np.int64),
        frame_areas=areas.numpy(), image_size=grid_pass.image_size, tiled=grid_pass.tiled, stats=steps.stats,
        cut=CutCandidates.cat(cuts))


def recover_cut_objects(predictor: Predictor, image, parts: list[FrameObjects], settings: EverythingSettings, *,
                        contrast_limits=None, rgb: bool | None = None,
                        cancel: Callable[[], bool] | None = None) -> FrameObjects:
    """The objects of a tiled image that no tile holds whole, from the candidates its tiles cut (``parts``' cut
    candidates): an object larger than a tile's core is cut by an inner border in every tile that sees it, so the
    crop-edge rule drops it everywhere.

    A cut candidate whose box (the part its tile sees) lies within the box of an object a tile kept is that
    object, held whole by another tile. Each of the others is decoded again from its grid point as a prompt is
    (:meth:`~napari_sam.core.predictor.Predictor.predict` grows its window around an object until it is whole), the
    best-scoring first; the same mask of the point's candidates is kept when it passes the predicted-IoU and
    stability filters. A candidate within an object recovered before is not decoded again, so a recovered object
    costs one decode, not one per tile that cut it. The arguments are those of :func:`segment_everything`; the
    result is one more part for :func:`merge_frames`.
    """
    first = parts[0]
    cut = CutCandidates.cat([part.cut for part in parts])
    held_boxes = np.array([obj.box for part in parts for obj in part.objects], dtype=np.float32).reshape(-1, 4)
    iou_filter, stability_filter = thresholds(settings)
    found: list[MaskObject] = []
    rows: list[tuple[float, float, tuple[int, int, int, int], np.ndarray]] = []
    with predictor.locked():
        if len(cut):
            predictor.set_image(image, contrast_limits=contrast_limits, rgb=rgb)
        for index in np.argsort(-cut.scores, kind="stable"):
            if cancel is not None and cancel():
                raise SegmentationCancelled()
            point, box = cut.points[index], cut.boxes[index]
            if _within(held_boxes, box) or _within(np.array([obj.box for obj in found], np.float32), box):
                continue
            prediction = predictor.predict(points=[point])
            frame, candidate = prediction.frame, int(cut.candidate[index])
            if candidate < 0:  # an instance head's object: SAM's best candidate from its deepest point
                candidate = int(np.argmax(prediction.scores[0]))
            obj = cropped(prediction.masks[0, candidate], frame.row0, frame.col0)
            if obj is None:
                continue
            score = float(prediction.scores[0, candidate])
            logits = torch.from_numpy(prediction.logits[0, candidate: candidate + 1])
            stability = float(frame_stability(logits, predictor.geometry, frame, settings.stability_score_offset)[1][0])
            if (iou_filter is None or score > iou_filter) and (stability_filter is None
                                                               or stability > stability_filter):
                found.append(obj)
                rows.append((score, stability, obj.box, point))
    return FrameObjects(
        objects=found, scores=np.array([r[0] for r in rows], np.float32),
        stability=np.array([r[1] for r in rows], np.float32),
        boxes=np.array([r[2] for r in rows], np.float32).reshape(-1, 4),
        points=np.array([r[3] for r in rows], np.float32).reshape(-1, 2), frames=np.zeros(len(found), np.int64),
        frame_areas=first.frame_areas, image_size=first.image_size, tiled=True,
        stats={"candidates": 0, "best_score": float("-inf"), "passed_score": 0, "passed_both": len(found)})


def _within(boxes: np.ndarray, box: np.ndarray) -> bool:
    """Whether :data:`WITHIN` of ``box``'s area lies inside one of ``boxes`` (all inclusive (row_min, col_min,
    row_max, col_max))."""
    if not len(boxes):
        return False
    rows = np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]) + 1
    cols = np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]) + 1
    inside = np.clip(rows, 0, None) * np.clip(cols, 0, None)
    return bool(inside.max() >= WITHIN * (box[2] - box[0] + 1) * (box[3] - box[1] + 1))


def merge_frames(parts: list[FrameObjects], settings: EverythingSettings, *, out=None,
                 first_id: int = 1) -> EverythingResult:
    """One image's result from the parts of its frames (every frame in exactly one part): duplicates across
    frames merged by box NMS, small regions removed, labels painted into ``out`` from ``first_id``."""
    if not parts:
        raise ValueError("merge_frames needs the parts of at least one frame.")
    objects = [obj for part in parts for obj in part.objects]
    scores, stability, boxes, points, crops = (np.concatenate([getattr(part, name) for part in parts])
                                               for name in ("scores", "stability", "boxes", "points", "frames"))
    first = parts[0]
    if len(first.frame_areas) > 1 and objects:
        if first.tiled or not settings.prefer_smaller_crops:
            preference = scores
        else:
            preference = 1.0 / first.frame_areas[crops]
        keep = nms(torch.from_numpy(boxes), torch.from_numpy(np.asarray(preference, np.float32)),
                   settings.crop_nms_thresh).numpy()
        objects = [objects[i] for i in keep]
        scores, stability, boxes, points = scores[keep], stability[keep], boxes[keep], points[keep]
    if settings.min_mask_region_area > 0:
        objects, scores, stability, boxes, points = _remove_small_regions(
            objects, scores, stability, points, settings.min_mask_region_area, settings.box_nms_thresh,
            first.image_size)
    order = np.argsort(-np.asarray(scores), kind="stable")
    objects = [objects[i] for i in order]
    stats = {"candidates": sum(p.stats["candidates"] for p in parts),
             "best_score": max(p.stats["best_score"] for p in parts),
             **{key: sum(p.stats[key] for p in parts) for key in ("passed_score", "passed_both")}}
    return EverythingResult(objects=objects, scores=np.asarray(scores, np.float32)[order],
                            stability_scores=np.asarray(stability, np.float32)[order],
                            boxes=np.asarray(boxes, np.float32).reshape(-1, 4)[order],
                            point_coords=np.asarray(points, np.float32).reshape(-1, 2)[order],
                            labels=paint_labels(objects, first.image_size, out, first_id=first_id),
                            image_size=first.image_size, stats=stats)


def _as_objects(predictor: Predictor, grid_pass: _Pass, found: Candidates):
    """The frame's kept candidates as cropped objects with their scores, stability, boxes, points and frame."""
    objects, rows = [], []
    if len(found):
        frame = grid_pass.frames[int(found.crops[0])]
        step = _chunk(*frame.size)
        for chunk in range(0, len(found), step):
            part = found.logits[chunk: chunk + step].float()
            geometry = predictor.geometry
            full = (upscale_logits(part, geometry, geometry.input_size(frame), frame.size) > 0).cpu().numpy()
            for offset, mask in enumerate(full):
                obj = cropped(mask, frame.row0, frame.col0)
                if obj is not None:
                    objects.append(obj)
                    rows.append(chunk + offset)
    index = torch.as_tensor(rows, dtype=torch.long)
    values = tuple(t.cpu()[index].numpy() for t in (found.scores, found.stability, found.boxes, found.points))
    return objects, values, found.crops.cpu()[index].numpy()


def _remove_small_regions(objects, scores, stability, points, min_area, nms_thresh, image_size):
    """Meta's post-processing: drop small islands, fill small holes, then NMS preferring unchanged masks."""
    cleaned_objects, preference, keep = [], [], []
    for index, obj in enumerate(objects):
        obj, changed = cleaned(obj, min_area, image_size)
        if obj is not None:
            cleaned_objects.append(obj)
            preference.append(0.0 if changed else 1.0)
            keep.append(index)
    kept = np.asarray(keep, dtype=np.int64)
    boxes = np.array([obj.box for obj in cleaned_objects], dtype=np.float32).reshape(-1, 4)
    survivors = nms(torch.from_numpy(boxes), torch.tensor(preference, dtype=torch.float32), nms_thresh).numpy()
    return ([cleaned_objects[i] for i in survivors], scores[kept][survivors], stability[kept][survivors],
            boxes[survivors], points[kept][survivors])


def explain_empty(stats: dict, settings: EverythingSettings) -> str:
    """Why a run found no object, and which setting to lower (from :attr:`EverythingResult.stats`)."""
    if settings.method != "grid":
        return ("The instance head found no object: lower 'foreground' or 'min object (px)', "
                "or use the method 'grid'." if not stats.get("passed_both") else
                "The objects the instance head found were all dropped for touching a tile's edge.")
    if not stats.get("candidates"):
        return "No candidate mask was decoded."
    if not stats["passed_score"]:
        return (f"No candidate's predicted IoU was above 'min predicted IoU' ({settings.pred_iou_thresh:g}); the "
                f"best was {stats['best_score']:.2f}. Lower 'min predicted IoU' below that.")
    if not stats["passed_both"]:
        return (f"{stats['passed_score']} of {stats['candidates']} candidates passed 'min predicted IoU' "
                f"({settings.pred_iou_thresh:g}) but none 'min stability' ({settings.stability_score_thresh:g}). "
                "Lower 'min stability' (0.8, say).")
    return ("The candidates that passed both filters were all dropped as duplicates or for touching a crop's edge. "
            "Raise 'points per side' or lower 'min region (px)'.")
