"""Segment everything: SAM's automatic mask generator, filtering at low resolution.

The semantics are those of Meta's ``SamAutomaticMaskGenerator`` and transformers' ``mask-generation`` pipeline:
a point grid per crop, three candidates per point, the predicted-IoU and stability-score filters, box NMS within
and across crops, the crop-edge rule, and optional small-region/hole removal. What differs is the cost:

- candidates are filtered on their low-resolution logits first; only survivors are upsampled (in chunks), to
  compute their exact stability score, box and, at the end, their mask;
- NMS runs in torch on the model's device (``utils.amg.nms``), no torchvision;
- each crop is embedded once; peak memory is bounded by one batch and the surviving masks' low-res logits.

All positions are (row, col) in the image's data pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .image_preparation import default_contrast_limits, image_layout
from .predictor import Predictor, upscale_logits
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

#: Survivors are upsampled this many full-resolution pixels at a time (bounds the float memory: 64 MiB).
UPSAMPLE_PIXELS = 16 * 1024 * 1024
#: The low-resolution stability pre-filter keeps candidates within this margin of the threshold.
STABILITY_MARGIN = 0.1


def _chunk(height: int, width: int) -> int:
    """How many masks of (height, width) to upsample at once."""
    return max(1, UPSAMPLE_PIXELS // max(1, height * width))


class SegmentationCancelled(Exception):
    """``cancel()`` returned True between two batches."""


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
    """

    masks: np.ndarray
    scores: np.ndarray
    stability_scores: np.ndarray
    boxes: np.ndarray
    point_coords: np.ndarray
    labels: np.ndarray


@dataclass
class _Candidates:
    """Surviving candidates of one crop, kept at low resolution."""

    logits: list
    scores: list
    stability: list
    boxes: list
    points: list

    def cat(self):
        if not self.logits:
            return None
        return (torch.cat(self.logits), torch.cat(self.scores), torch.cat(self.stability), torch.cat(self.boxes),
                torch.cat(self.points))


def _crop_batches(predictor: Predictor, crop, points_rc, settings, cancel, progress, counter) -> _Candidates:
    """Run the point grid of one crop (already set on the predictor) and keep the candidates that pass."""
    row0, col0, row1, col1 = crop
    current = predictor.current
    geometry = predictor.geometry
    size = current.original_size
    found = _Candidates([], [], [], [], [])
    valid_rows = math.ceil(current.resized_size[0] * geometry.mask_size / geometry.pad_size[0])
    valid_cols = math.ceil(current.resized_size[1] * geometry.mask_size / geometry.pad_size[1])
    offset = torch.tensor([row0, col0, row0, col0], dtype=torch.float32, device=predictor.device)
    for start in range(0, len(points_rc), settings["points_per_batch"]):
        if cancel is not None and cancel():
            raise SegmentationCancelled()
        points = points_rc[start: start + settings["points_per_batch"]]
        logits, scores, kept = predictor.point_grid_logits(points, min_score=settings["pred_iou_thresh"])
        point_index = kept.repeat_interleave(scores.shape[1])  # the point of each candidate
        logits, scores = logits.flatten(0, 1), scores[kept].flatten()
        keep = scores > settings["pred_iou_thresh"]
        if settings["stability_score_thresh"] > 0:  # cheap pre-filter on the valid low-res region
            rough = stability_score(logits[:, :valid_rows, :valid_cols], 0.0, settings["stability_score_offset"])
            keep &= rough > settings["stability_score_thresh"] - STABILITY_MARGIN
        logits, scores, point_index = logits[keep], scores[keep], point_index[keep]
        grid = torch.as_tensor(points, dtype=torch.float32, device=logits.device)
        step = _chunk(*size)
        for chunk in range(0, len(logits), step):
            part = logits[chunk: chunk + step]
            full = upscale_logits(part, geometry, current.resized_size, size)
            stability = stability_score(full, 0.0, settings["stability_score_offset"])
            passed = stability > settings["stability_score_thresh"] if settings["stability_score_thresh"] > 0 \
                else torch.ones_like(stability, dtype=torch.bool)
            boxes = masks_to_boxes(full > 0) + offset
            passed &= ~box_near_crop_edge(boxes, crop, [0, 0, settings["height"], settings["width"]])
            passed &= (full > 0).flatten(1).any(dim=1)
            chosen = torch.nonzero(passed).flatten()
            found.logits.append(part[chosen].to(torch.float16))
            found.scores.append(scores[chunk: chunk + step][chosen])
            found.stability.append(stability[chosen])
            found.boxes.append(boxes[chosen])
            found.points.append(grid[point_index[chunk: chunk + step][chosen]] + offset[:2])
        counter[0] += 1
        if progress is not None:
            progress(counter[0], counter[1])
    return found


def segment_everything(predictor: Predictor, image: np.ndarray, *, contrast_limits=None, rgb: bool | None = None,
                       points_per_side: int = 32, points_per_batch: int = 64, pred_iou_thresh: float = 0.88,
                       stability_score_thresh: float = 0.95, stability_score_offset: float = 1.0,
                       box_nms_thresh: float = 0.7, crop_n_layers: int = 0, crop_nms_thresh: float = 0.7,
                       crop_overlap_ratio: float = 512 / 1500, crop_n_points_downscale_factor: int = 1,
                       prefer_smaller_crops: bool = True, min_mask_region_area: int = 0,
                       progress: Callable[[int, int], None] | None = None,
                       cancel: Callable[[], bool] | None = None) -> EverythingResult:
    """Find every object in a 2D image (gray, RGB or RGBA; any dtype), as SAM's automatic mask generator.

    Args:
        predictor: the model to use; its current image is replaced by the image's crops.
        image, contrast_limits, rgb: as for :meth:`Predictor.set_image`; without limits, the whole image's
            default limits are used for every crop.
        points_per_side: the grid of one-point prompts is points_per_side² per crop (before downscaling).
        points_per_batch: prompts decoded at once; bounds the peak memory.
        pred_iou_thresh, stability_score_thresh, stability_score_offset: candidate filters.
        box_nms_thresh: NMS within a crop; crop_nms_thresh: NMS across crops.
        prefer_smaller_crops: across crops, keep the mask from the smaller crop, as Meta's generator does
            (True); or the higher predicted IoU, as transformers' pipeline does (False).
        crop_n_layers, crop_overlap_ratio, crop_n_points_downscale_factor: extra crop layers, as Meta's.
        min_mask_region_area: islands and holes smaller than this are removed (0: off).
        progress: called as ``progress(done, total)`` after every batch.
        cancel: checked between batches; returning True raises :class:`SegmentationCancelled`.
    """
    image = np.asarray(image)
    has_channels = image_layout(image, rgb)
    limits = tuple(contrast_limits) if contrast_limits is not None else default_contrast_limits(image, has_channels)
    height, width = image.shape[:2]
    crops, layers = generate_crop_boxes((height, width), crop_n_layers, crop_overlap_ratio)
    grids = [build_point_grid(int(points_per_side / crop_n_points_downscale_factor**layer))
             for layer in range(crop_n_layers + 1)]
    counter = [0, sum(math.ceil(len(grids[layer]) / points_per_batch) for layer in layers)]
    settings = {"points_per_batch": points_per_batch, "pred_iou_thresh": pred_iou_thresh,
                "stability_score_thresh": stability_score_thresh,
                "stability_score_offset": stability_score_offset, "height": height, "width": width}
    kept_parts = []
    for crop_index, (crop, layer) in enumerate(zip(crops, layers)):
        row0, col0, row1, col1 = crop
        points = grids[layer] * np.array([row1 - row0, col1 - col0])
        with predictor.locked():  # the crop stays the current image for all its batches
            predictor.set_image(image[row0:row1, col0:col1], contrast_limits=limits, rgb=has_channels)
            found = _crop_batches(predictor, crop, points, settings, cancel, progress, counter).cat()
        if found is None:
            continue
        logits, scores, stability, boxes, coords = found
        keep = nms(boxes, scores, box_nms_thresh)
        kept_parts.append((crop_index, logits[keep], scores[keep], stability[keep], boxes[keep], coords[keep]))
    return _assemble(predictor, image, limits, has_channels, crops, kept_parts, crop_nms_thresh,
                     prefer_smaller_crops, min_mask_region_area, box_nms_thresh)


def _assemble(predictor, image, limits, has_channels, crops, kept_parts, crop_nms_thresh, prefer_smaller_crops,
              min_area, box_nms_thresh) -> EverythingResult:
    """Merge the crops' survivors (NMS across crops), upsample the kept masks, post-process, label."""
    height, width = image.shape[:2]
    device = predictor.device
    if not kept_parts:
        return _result(np.zeros((0, height, width), bool), *(np.zeros((0,) + s) for s in ((), (), (4,), (2,))))
    crop_of = torch.cat([torch.full((len(p[1]),), p[0], device=device) for p in kept_parts])
    logits, scores, stability, boxes, coords = (torch.cat([p[i] for p in kept_parts]) for i in range(1, 6))
    if len(crops) > 1:
        crop_boxes = torch.tensor(crops, dtype=torch.float32, device=device)
        preference = 1.0 / box_area(crop_boxes)[crop_of] if prefer_smaller_crops else scores
        keep = nms(boxes, preference, crop_nms_thresh)
        crop_of, logits, scores, stability, boxes, coords = (t[keep] for t in (crop_of, logits, scores, stability,
                                                                               boxes, coords))
    masks = np.zeros((len(logits), height, width), dtype=bool)
    for crop_index in torch.unique(crop_of).tolist():  # one embedding per crop: its sizes map the logits
        row0, col0, row1, col1 = crops[crop_index]
        with predictor.locked():
            predictor.set_image(image[row0:row1, col0:col1], contrast_limits=limits, rgb=has_channels)
            sizes = predictor.current.resized_size, predictor.current.original_size
        rows = torch.nonzero(crop_of == crop_index).flatten()
        step = _chunk(row1 - row0, col1 - col0)
        for chunk in range(0, len(rows), step):
            part = rows[chunk: chunk + step]
            full = upscale_logits(logits[part].float(), predictor.geometry, *sizes)
            masks[part.cpu().numpy(), row0:row1, col0:col1] = (full > 0).cpu().numpy()
    scores, stability, boxes, coords = (t.cpu().numpy() for t in (scores, stability, boxes, coords))
    if min_area > 0:
        masks, scores, stability, boxes, coords = _remove_small_regions(masks, scores, stability, boxes, coords,
                                                                        min_area, box_nms_thresh)
    order = np.argsort(-scores, kind="stable")
    return _result(masks[order], scores[order], stability[order], boxes[order], coords[order])


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
