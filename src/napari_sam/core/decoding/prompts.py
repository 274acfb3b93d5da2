"""Prompts: one object's (:class:`ObjectPrompt`), and the checked prompts of one decoder call (:class:`PromptBatch`).

Positions are (row, col) in the image's data pixels: a pixel's centre is its integer index, so valid positions
run from -0.5 to size - 0.5 on each axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..objects import MaskObject


@dataclass
class ObjectPrompt:
    """One object's prompts, in (row, col) data pixels: points (n, 2), labels (n,), box (4,) or None, and a mask
    prompt cropped to its box (a :class:`~napari_sam.core.objects.MaskObject`) or None."""

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None
    mask: MaskObject | None = None


@dataclass(frozen=True)
class PromptBatch:
    """Prompts for ``n_objects`` objects, checked and clipped to the image.

    Attributes:
        points: (n_points, 2) float64 (row, col) of the single object, or (n_objects, n_points, 2), each object's
            own; or None.
        point_labels: (n_points,) or (n_objects, n_points) int64, 1 positive and 0 negative, or None.
        boxes: (n_objects, 4) float64 (row_min, col_min, row_max, col_max), clipped to the image, or None.
        mask_input: (n_objects, m, m) float32 low-resolution logits, or None.
    """

    points: np.ndarray | None
    point_labels: np.ndarray | None
    boxes: np.ndarray | None
    mask_input: np.ndarray | None

    @property
    def n_objects(self) -> int:
        if self.boxes is not None:
            return len(self.boxes)
        return len(self.points) if self.points is not None and self.points.ndim == 3 else 1

    def all_points(self) -> np.ndarray:
        """(n, 2) every point of every object (none: (0, 2))."""
        return np.zeros((0, 2)) if self.points is None else self.points.reshape(-1, 2)


def _finite_array(values, name: str, columns: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numbers, got {values!r}.") from error
    if array.ndim == 1 and array.size == columns:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != columns:
        raise ValueError(f"{name} must have shape (n, {columns}), got {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or inf: {array.tolist()}.")
    return array


def _check_points(points, point_labels, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    points = _finite_array(points, "points", 2)
    if point_labels is None:
        labels = np.ones(len(points), dtype=np.int64)
    else:
        labels = np.asarray(point_labels).reshape(-1)
        if labels.shape != (len(points),):
            raise ValueError(f"point_labels must have one label per point: {len(points)} points, "
                             f"{labels.size} labels.")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"point_labels must be 1 (positive) or 0 (negative), got {labels.tolist()}.")
        labels = labels.astype(np.int64)
    height, width = size
    outside = (points[:, 0] < -0.5) | (points[:, 0] > height - 0.5) | (points[:, 1] < -0.5) | (
        points[:, 1] > width - 0.5)
    if outside.any():
        raise ValueError(
            f"Point(s) {points[outside].tolist()} (row, col) lie outside the {height}x{width} image."
        )
    return points, labels


def _check_boxes(boxes, size: tuple[int, int]) -> np.ndarray:
    """(n, 4) float64 boxes clipped to an image of ``size`` (H, W): pixel centres 0..H-1 and 0..W-1."""
    boxes = _finite_array(boxes, "boxes", 4)
    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if degenerate.any():
        raise ValueError(
            f"Degenerate box(es) {boxes[degenerate].tolist()}: each box is (row_min, col_min, row_max, col_max) "
            "with row_max > row_min and col_max > col_min."
        )
    height, width = size
    outside = (boxes[:, 2] < 0) | (boxes[:, 0] > height - 1) | (boxes[:, 3] < 0) | (boxes[:, 1] > width - 1)
    if outside.any():
        raise ValueError(f"Box(es) {boxes[outside].tolist()} lie outside the {height}x{width} image.")
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, height - 1)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, width - 1)
    flat = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if flat.any():
        raise ValueError(
            f"Box(es) {boxes[flat].tolist()} have no height or no width inside the {height}x{width} image "
            f"(clipped to it: {clipped[flat].tolist()}): draw the box over the object."
        )
    return clipped


def _check_mask_input(mask_input, n_objects: int, mask_size: int) -> np.ndarray:
    given = np.asarray(mask_input)
    if given.dtype == bool:
        raise ValueError("mask_input takes low-resolution logits, not a bool mask: turn a mask drawn on the image "
                         "into logits with Predictor.mask_logits(mask), or pass Prediction.best_logits().")
    if not (np.issubdtype(given.dtype, np.floating) or np.issubdtype(given.dtype, np.integer)):
        raise ValueError(f"mask_input must be low-resolution logits (numbers, shape ({n_objects}, {mask_size}, "
                         f"{mask_size})), got {mask_input!r:.80}.")
    masks = given.astype(np.float32)
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[1:] != (mask_size, mask_size):
        raise ValueError(
            f"mask_input must be low-resolution logits of shape ({n_objects}, {mask_size}, {mask_size}) "
            f"(a previous Prediction's logits for one candidate), got {np.shape(mask_input)}."
        )
    if len(masks) == 1 and n_objects > 1:
        masks = np.repeat(masks, n_objects, axis=0)
    if len(masks) != n_objects:
        raise ValueError(f"mask_input has {len(masks)} masks for {n_objects} objects.")
    if not np.isfinite(masks).all():
        raise ValueError("mask_input contains NaN or inf: pass low-resolution logits from a previous prediction "
                         "(Prediction.best_logits()) or Predictor.mask_logits().")
    return masks


def check_prompts(points, point_labels, boxes, mask_input, size: tuple[int, int],
                  mask_size: int | None = None) -> PromptBatch:
    """Validate prompts for an image of ``size`` (H, W) and group them into objects.

    One object per box; points (with at most one box) make one object. Boxes that overlap the image are clipped
    to it. ``mask_size`` (the checkpoint's low-res mask side) is needed only with a ``mask_input``.

    Raises:
        ValueError: no points and no boxes; points with several boxes; malformed, non-finite or outside
            positions; boxes that are degenerate, or have no height or width once clipped to the image; labels
            other than 0/1; a mask_input of the wrong shape or with NaN or inf.
    """
    has_points = points is not None and np.size(points) > 0
    has_boxes = boxes is not None and np.size(boxes) > 0
    if has_points and np.ndim(points) == 3:
        return _per_object(points, point_labels, boxes if has_boxes else None, mask_input, size, mask_size)
    if not has_points and not has_boxes:
        raise ValueError("Empty prompt: give at least one point or one box.")
    if not has_points and point_labels is not None and np.size(point_labels) > 0:
        raise ValueError("point_labels were given without points.")
    checked_points = checked_labels = checked_boxes = None
    if has_points:
        checked_points, checked_labels = _check_points(points, point_labels, size)
    if has_boxes:
        checked_boxes = _check_boxes(boxes, size)
        if has_points and len(checked_boxes) > 1:
            raise ValueError(
                f"Points go with one object, but {len(checked_boxes)} boxes were given: combine points with a "
                "single box, or predict the boxes on their own."
            )
    n_objects = 1 if checked_boxes is None else len(checked_boxes)
    checked_masks = None
    if mask_input is not None:
        if mask_size is None:
            raise ValueError("check_prompts needs the checkpoint's mask_size to check a mask_input.")
        checked_masks = _check_mask_input(mask_input, n_objects, mask_size)
    return PromptBatch(checked_points, checked_labels, checked_boxes, checked_masks)


def _per_object(points, point_labels, boxes, mask_input, size: tuple[int, int],
                mask_size: int | None) -> PromptBatch:
    """:func:`check_prompts` for points given per object: (n_objects, n_points, 2), with one box per object or
    none."""
    array = np.asarray(points)
    n_objects, per_object = array.shape[:2]
    flat_labels = None if point_labels is None else np.asarray(point_labels).reshape(-1)
    if point_labels is not None and np.shape(point_labels) != (n_objects, per_object):
        raise ValueError(f"point_labels must have shape {(n_objects, per_object)} for points of shape "
                         f"{array.shape}, got {np.shape(point_labels)}.")
    flat, labels = _check_points(array.reshape(-1, array.shape[-1]), flat_labels, size)
    checked_boxes = None
    if boxes is not None:
        checked_boxes = _check_boxes(boxes, size)
        if len(checked_boxes) != n_objects:
            raise ValueError(f"Points of {n_objects} objects need {n_objects} boxes (one each) or none, got "
                             f"{len(checked_boxes)}.")
    checked_masks = None
    if mask_input is not None:
        if mask_size is None:
            raise ValueError("check_prompts needs the checkpoint's mask_size to check a mask_input.")
        checked_masks = _check_mask_input(mask_input, n_objects, mask_size)
    return PromptBatch(flat.reshape(n_objects, per_object, 2), labels.reshape(n_objects, per_object), checked_boxes,
                       checked_masks)
