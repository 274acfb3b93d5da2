"""Propagating one object through a z-stack or time-lapse with any SAM-1 checkpoint.

From the slice where the object was segmented, each next slice (both directions) is prompted with the previous
slice's result: its bounding box, positive points sampled deep inside it, and optionally its low-resolution
logits as ``mask_input``. Propagation stops in a direction when the predicted score falls below a threshold, the
mask vanishes, or its IoU with the previous slice drops sharply.

Positions are (row, col) in the slices' data pixels; ``axis`` is the stack axis of ``volume``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .automatic_mask_generator import SegmentationCancelled
from .predictor import Predictor


@dataclass
class PropagationResult:
    """The object through the stack.

    Attributes:
        masks: (n_slices, H, W) bool, slices first whatever the stack axis: the object on every slice it reaches.
        scores: (n_slices,) float32 predicted IoU per slice, NaN where the object was not propagated.
        start, stop: the first and last slice index (inclusive) holding the object.
    """

    masks: np.ndarray
    scores: np.ndarray
    start: int
    stop: int


def interior_points(mask: np.ndarray, count: int = 3) -> np.ndarray:
    """(≤ count, 2) (row, col) points deep inside ``mask``: the maxima of its distance to the background,
    spread apart (each next point is the deepest one outside the previous ones' neighbourhood)."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(mask)
    points = []
    for _ in range(count):
        if depth.max() <= 0:
            break
        row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
        points.append((row, col))
        radius = max(2.0, depth[row, col])
        rows, cols = np.ogrid[: mask.shape[0], : mask.shape[1]]
        depth = np.where((rows - row) ** 2 + (cols - col) ** 2 <= (1.5 * radius) ** 2, 0, depth)
    return np.asarray(points, dtype=float).reshape(-1, 2)


def _box(mask: np.ndarray) -> list[float]:
    rows, cols = np.nonzero(mask)
    return [rows.min(), cols.min(), rows.max(), cols.max()]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def propagate(predictor: Predictor, volume: np.ndarray, start_index: int, axis: int, first_mask: np.ndarray, *,
              contrast_limits=None, rgb: bool | None = None, score_threshold: float = 0.6,
              iou_threshold: float = 0.3, min_area: int = 10, n_points: int = 3, use_mask_input: bool = True,
              directions: tuple[int, ...] = (-1, 1), progress: Callable[[int, int], None] | None = None,
              cancel: Callable[[], bool] | None = None) -> PropagationResult:
    """Extend ``first_mask`` (the object on slice ``start_index``) through ``volume`` along ``axis``.

    Args:
        predictor: any SAM-1 checkpoint; its current image becomes the slices one after another.
        volume: (…, H, W[, C]) array whose ``axis`` runs through the slices (z or t); other leading axes must
            already be fixed, so that each slice is a 2D image (gray, RGB or RGBA).
        start_index: the slice holding ``first_mask``.
        axis: the stack axis of ``volume``.
        first_mask: (H, W) bool, the object on the start slice.
        contrast_limits, rgb: as for :meth:`Predictor.set_image`; the same limits serve every slice (without
            them, the start slice's defaults are used).
        score_threshold: stop when the predicted IoU falls below it.
        iou_threshold: stop when the IoU with the previous slice's mask falls below it.
        min_area: stop when the mask has fewer pixels (the start slice's mask is kept whatever its size).
        n_points: positive points sampled inside the previous mask.
        use_mask_input: pass the previous slice's low-res logits as ``mask_input``.
        directions: -1 towards lower slice indices, 1 towards higher ones (both by default; one of them to
            re-propagate from a corrected slice away from the first one).
        progress: ``progress(done, total)`` after each slice; cancel: checked before each slice, returning True
            raises :class:`SegmentationCancelled`.
    """
    from .image_preparation import default_contrast_limits, image_layout

    volume = np.moveaxis(np.asarray(volume), axis, 0)
    n_slices = volume.shape[0]
    if not 0 <= start_index < n_slices:
        raise ValueError(f"start_index {start_index} is outside the {n_slices} slices.")
    first_mask = np.asarray(first_mask, dtype=bool)
    has_channels = image_layout(volume[start_index], rgb)
    if first_mask.shape != volume.shape[1:3]:
        raise ValueError(f"first_mask has shape {first_mask.shape}, the slices {volume.shape[1:3]}.")
    if not directions or set(directions) - {-1, 1}:
        raise ValueError(f"directions must be -1, 1 or both, not {directions!r}.")
    if not first_mask.any():
        raise ValueError("first_mask is empty: segment the object first.")
    if contrast_limits is None:
        contrast_limits = default_contrast_limits(volume[start_index], has_channels)
    masks = np.zeros(volume.shape[:3], dtype=bool)
    masks[start_index] = first_mask
    scores = np.full(n_slices, np.nan, dtype=np.float32)
    scores[start_index] = 1.0
    done = 1
    total = 1 + sum(start_index if step < 0 else n_slices - 1 - start_index for step in set(directions))
    bounds = [start_index, start_index]
    with predictor.locked():
        predictor.set_image(volume[start_index], contrast_limits=contrast_limits, rgb=has_channels)
        first_logits = predictor.mask_logits(first_mask)[0] if use_mask_input else None
    for step in sorted(set(directions)):
        previous, logits = first_mask, first_logits
        index = start_index + step
        while 0 <= index < n_slices:
            if cancel is not None and cancel():
                raise SegmentationCancelled()
            with predictor.locked():  # the slice stays current for its prediction
                predictor.set_image(volume[index], contrast_limits=contrast_limits, rgb=has_channels)
                prediction = predictor.predict(points=interior_points(previous, n_points),
                                               boxes=[_box(previous)],
                                               mask_input=None if logits is None else logits[None],
                                               multimask=False)
            mask, score = prediction.masks[0, 0], float(prediction.scores[0, 0])
            done += 1
            if progress is not None:
                progress(done, total)
            if score < score_threshold or mask.sum() < min_area or _iou(mask, previous) < iou_threshold:
                break
            masks[index], scores[index] = mask, score
            bounds[0 if step < 0 else 1] = index
            previous = mask
            logits = prediction.logits[0, 0] if use_mask_input else None
            index += step
    if progress is not None:
        progress(total, total)
    return PropagationResult(masks=masks, scores=scores, start=bounds[0], stop=bounds[1])
