"""Segment everything: SAM's automatic mask generator, filtering at low resolution.

The semantics are those of Meta's ``SamAutomaticMaskGenerator`` and transformers' ``mask-generation`` pipeline:
a point grid per crop, three candidates per point, the predicted-IoU and stability-score filters (a threshold of
0 turns a filter off), box NMS within and across crops, the crop-edge rule, and optional small-region/hole
removal. What differs is the cost:

- candidates are filtered on their low-resolution logits first; only survivors are upsampled (in chunks), to
  compute their exact stability score, box and, at the end, their mask;
- NMS runs in torch on the model's device (``utils.amg.nms``), no torchvision;
- each crop is embedded exactly once; peak memory is bounded by one batch and the survivors' low-res logits.

All positions are (row, col) in the image's data pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .candidates import Candidates
from .errors import SegmentationCancelled
from .image_preparation import default_contrast_limits, image_layout, resized_shape
from .predictor import Predictor, upscale_logits
from .settings import EverythingSettings
from .utils.amg import (
    box_area,
    box_near_crop_edge,
    build_point_grid,
    generate_crop_boxes,
    masks_to_boxes,
    nms,
    remove_small_regions,
    stability_score,
)

__all__ = ["EverythingResult", "SegmentationCancelled", "explain_empty", "instance_labels", "segment_everything"]

#: Survivors are upsampled this many full-resolution pixels at a time (bounds the float memory: 64 MiB).
UPSAMPLE_PIXELS = 16 * 1024 * 1024
#: The low-resolution stability pre-filter keeps candidates within this margin of the threshold.
STABILITY_MARGIN = 0.1


def _chunk(height: int, width: int) -> int:
    """How many masks of (height, width) to upsample at once."""
    return max(1, UPSAMPLE_PIXELS // max(1, height * width))


@dataclass
class EverythingResult:
    """Masks of every object found, ordered by predicted IoU (best first).

    Attributes:
        masks: (n, H, W) bool.
        scores: (n,) predicted IoU; stability_scores: (n,).
        boxes: (n, 4) (row_min, col_min, row_max, col_max), inclusive.
        point_coords: (n, 2) (row, col) of the grid point that prompted each mask.
        labels: (H, W) uint32 instance image, 0 = background; label k is ``masks[k - 1]``, painted from the
            largest mask to the smallest so that small objects stay visible.
        stats: what the filters saw, to explain an empty result: ``candidates`` (decoded), ``best_score`` (the
            highest predicted IoU), ``passed_score`` (candidates above the IoU threshold) and ``passed_both``
            (those also above the stability threshold, before NMS and the crop-edge rule).
    """

    masks: np.ndarray
    scores: np.ndarray
    stability_scores: np.ndarray
    boxes: np.ndarray
    point_coords: np.ndarray
    labels: np.ndarray
    stats: dict = field(default_factory=dict)

    def features(self) -> dict[str, np.ndarray]:
        """One row per object, as columns: label, area, score, stability and its box (row/col min/max)."""
        columns = {"label": np.arange(1, len(self.masks) + 1), "area": self.masks.sum(axis=(1, 2)),
                   "score": self.scores, "stability": self.stability_scores}
        for index, name in enumerate(("box_row_min", "box_col_min", "box_row_max", "box_col_max")):
            columns[name] = self.boxes[:, index]
        return columns


@dataclass(frozen=True)
class _Crop:
    """One crop of the image: its box (row0, col0, row1, col1, end-exclusive), its layer, and the size it takes
    in the model's input (computed from the checkpoint's geometry, without embedding it)."""

    box: tuple[int, int, int, int]
    layer: int
    resized_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.box[2] - self.box[0], self.box[3] - self.box[1]


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


def _decode_crop(predictor: Predictor, crops: list[_Crop], index: int, points_rc: np.ndarray,
                 settings: EverythingSettings, image_size: tuple[int, int], steps: _Steps) -> Candidates:
    """Decode the point grid of crop ``index`` (already the predictor's current image); the candidates that
    pass, before NMS."""
    crop = crops[index]
    row0, col0 = crop.box[:2]
    geometry, current = predictor.geometry, predictor.current
    iou_filter = settings.pred_iou_thresh if settings.pred_iou_thresh > 0 else None  # 0: off, as Meta's
    stability_filter = settings.stability_score_thresh if settings.stability_score_thresh > 0 else None
    offset_value = settings.stability_score_offset
    valid_rows = math.ceil(crop.resized_size[0] * geometry.mask_size / geometry.pad_size[0])
    valid_cols = math.ceil(crop.resized_size[1] * geometry.mask_size / geometry.pad_size[1])
    offset = torch.tensor([row0, col0, row0, col0], dtype=torch.float32, device=predictor.device)
    image_box = [0, 0, *image_size]
    parts = []
    for start in range(0, len(points_rc), settings.points_per_batch):
        steps.check()
        points = points_rc[start: start + settings.points_per_batch]
        logits, scores, kept = predictor.point_grid_logits(points, min_score=iou_filter)
        point_index = kept.repeat_interleave(scores.shape[1])  # the point of each candidate
        all_scores, logits, scores = scores, logits.flatten(0, 1), scores[kept].flatten()
        keep = torch.ones_like(scores, dtype=torch.bool) if iou_filter is None else scores > iou_filter
        steps.saw(all_scores, int(keep.sum()))
        if stability_filter is not None:  # a cheap pre-filter on the valid low-res region
            rough = stability_score(logits[:, :valid_rows, :valid_cols], 0.0, offset_value)
            keep &= rough > stability_filter - STABILITY_MARGIN
        logits, scores, point_index = logits[keep], scores[keep], point_index[keep]
        grid = torch.as_tensor(points, dtype=torch.float32, device=logits.device)
        step = _chunk(*crop.size)
        for chunk in range(0, len(logits), step):
            part = logits[chunk: chunk + step]
            full = upscale_logits(part, geometry, current.resized_size, crop.size)
            stability = stability_score(full, 0.0, offset_value)
            passed = (full > 0).flatten(1).any(dim=1)
            if stability_filter is not None:
                passed &= stability > stability_filter
            steps.stats["passed_both"] += int(passed.sum())
            boxes = masks_to_boxes(full > 0) + offset
            passed &= ~box_near_crop_edge(boxes, crop.box, image_box)
            chosen = torch.nonzero(passed).flatten()
            parts.append(Candidates(
                logits=part[chosen].to(torch.float16), scores=scores[chunk: chunk + step][chosen],
                stability=stability[chosen], boxes=boxes[chosen],
                points=grid[point_index[chunk: chunk + step][chosen]] + offset[:2],
                crops=torch.full((len(chosen),), index, dtype=torch.long, device=logits.device)))
        steps.advance()
    return Candidates.cat(parts, geometry.mask_size, predictor.device)


def plan_crops(image_size: tuple[int, int], settings: EverythingSettings, longest_edge: int) -> list[_Crop]:
    """The crops of an image of ``image_size`` (H, W), with the size each takes in a model resizing its longest
    side to ``longest_edge``."""
    boxes, layers = generate_crop_boxes(image_size, settings.crop_n_layers, settings.crop_overlap_ratio)
    return [_Crop(tuple(box), layer, resized_shape((box[2] - box[0], box[3] - box[1]), longest_edge))
            for box, layer in zip(boxes, layers)]


def segment_everything(predictor: Predictor, image: np.ndarray, settings: EverythingSettings | None = None, *,
                       contrast_limits=None, rgb: bool | None = None,
                       progress: Callable[[int, int], None] | None = None,
                       cancel: Callable[[], bool] | None = None, **overrides) -> EverythingResult:
    """Find every object in a 2D image (gray, RGB or RGBA; any dtype), as SAM's automatic mask generator.

    Args:
        predictor: the model to use; its current image is replaced by the image's crops.
        image: (H, W), (H, W, 3) or (H, W, 4) array.
        settings: the generator's settings (:class:`~napari_sam.core.settings.EverythingSettings`; None: its
            defaults). ``overrides`` replace single settings by name, e.g. ``points_per_side=16``.
        contrast_limits, rgb: as for :meth:`Predictor.set_image`; without limits, the whole image's default
            limits serve every crop.
        progress: called as ``progress(done, total)`` after every batch of points.
        cancel: checked between batches; returning True raises :class:`SegmentationCancelled`.

    Raises:
        ValueError: an unknown or invalid setting, or an unsupported image.
    """
    settings = (settings or EverythingSettings()).replace(**overrides)
    image = np.asarray(image)
    has_channels = image_layout(image, rgb)
    limits = contrast_limits if contrast_limits is not None else default_contrast_limits(image, has_channels)
    height, width = image.shape[:2]
    crops = plan_crops((height, width), settings, predictor.geometry.longest_edge)
    grids = [build_point_grid(side) for side in settings.grid_sides()]
    steps = _Steps(sum(math.ceil(len(grids[crop.layer]) / settings.points_per_batch) for crop in crops), progress,
                   cancel)
    kept = []
    for index, crop in enumerate(crops):
        (row0, col0, row1, col1), points = crop.box, grids[crop.layer] * np.array(crop.size)
        with predictor.locked():  # the crop stays the current image for all its batches
            predictor.set_image(image[row0:row1, col0:col1], contrast_limits=limits, rgb=has_channels)
            found = _decode_crop(predictor, crops, index, points, settings, (height, width), steps)
        kept.append(found[nms(found.boxes, found.scores, settings.box_nms_thresh)])
    candidates = Candidates.cat(kept, predictor.geometry.mask_size, predictor.device)
    if len(crops) > 1 and len(candidates):
        crop_boxes = torch.tensor([crop.box for crop in crops], dtype=torch.float32, device=predictor.device)
        preference = 1.0 / box_area(crop_boxes)[candidates.crops] if settings.prefer_smaller_crops \
            else candidates.scores
        candidates = candidates[nms(candidates.boxes, preference, settings.crop_nms_thresh)]
    masks = _full_masks(predictor, candidates, crops, (height, width))
    scores, stability, boxes, points = (t.cpu().numpy() for t in (candidates.scores, candidates.stability,
                                                                  candidates.boxes, candidates.points))
    if settings.min_mask_region_area > 0:
        masks, scores, stability, boxes, points = _remove_small_regions(
            masks, scores, stability, boxes, points, settings.min_mask_region_area, settings.box_nms_thresh)
    order = np.argsort(-scores, kind="stable")
    result = _result(masks[order], scores[order], stability[order], boxes[order], points[order])
    result.stats = steps.stats
    return result


def _full_masks(predictor: Predictor, candidates: Candidates, crops: list[_Crop],
                image_size: tuple[int, int]) -> np.ndarray:
    """(n, H, W) bool: each candidate's low-res logits upsampled into its crop, in chunks."""
    masks = np.zeros((len(candidates), *image_size), dtype=bool)
    for index in torch.unique(candidates.crops).tolist():
        crop = crops[index]
        row0, col0, row1, col1 = crop.box
        rows = torch.nonzero(candidates.crops == index).flatten()
        step = _chunk(*crop.size)
        for chunk in range(0, len(rows), step):
            part = rows[chunk: chunk + step]
            full = upscale_logits(candidates.logits[part].float(), predictor.geometry, crop.resized_size, crop.size)
            masks[part.cpu().numpy(), row0:row1, col0:col1] = (full > 0).cpu().numpy()
    return masks


def _remove_small_regions(masks, scores, stability, boxes, coords, min_area, nms_thresh):
    """Meta's post-processing: drop small islands, fill small holes, then NMS preferring unchanged masks."""
    preference = np.ones(len(masks), dtype=np.float32)
    for index, mask in enumerate(masks):
        mask, changed_holes = remove_small_regions(mask, min_area, "holes")
        mask, changed_islands = remove_small_regions(mask, min_area, "islands")
        masks[index] = mask
        if changed_holes or changed_islands:
            preference[index] = 0.0
    boxes = masks_to_boxes(torch.from_numpy(masks)).numpy()
    keep = nms(torch.from_numpy(boxes), torch.from_numpy(preference), nms_thresh).numpy()
    keep = keep[masks[keep].any(axis=(1, 2))]
    return masks[keep], scores[keep], stability[keep], boxes[keep], coords[keep]


def instance_labels(masks: np.ndarray) -> np.ndarray:
    """(H, W) uint32: label k for ``masks[k - 1]``, painted largest first so that small masks stay visible."""
    labels = np.zeros(masks.shape[1:], dtype=np.uint32)
    for index in np.argsort(-masks.sum(axis=(1, 2)), kind="stable"):
        labels[masks[index]] = index + 1
    return labels


def _result(masks, scores, stability, boxes, coords) -> EverythingResult:
    return EverythingResult(masks=masks, scores=np.asarray(scores, np.float32),
                            stability_scores=np.asarray(stability, np.float32),
                            boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                            point_coords=np.asarray(coords, np.float32).reshape(-1, 2),
                            labels=instance_labels(masks))


def explain_empty(stats: dict, settings: EverythingSettings) -> str:
    """Why a run found no object, and which setting to lower (from :attr:`EverythingResult.stats`)."""
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
