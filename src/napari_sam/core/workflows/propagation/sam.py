"""Propagating one object through a z-stack or time-lapse with any SAM-1 checkpoint.

From the slice where the object was segmented, each next slice is prompted with the previous slice's result: its
bounding box, positive points deep inside it, and optionally its low-resolution logits as ``mask_input``. The order
of the slices, the stop rules, progress and cancelling are
:func:`~napari_sam.core.workflows.propagation.driver.drive`'s, shared with SAM2-family video propagation; this module
only says how SAM segments one slice (:class:`SamStepper`).

Positions are (row, col) in the slices' data pixels; ``axis`` is the stack axis of ``volume``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...predictor import Predictor
from ...settings import PropagationSettings
from .driver import PropagationResult, Run, Segmented, drive, prepare_run

__all__ = ["PropagationResult", "SamStepper", "interior_points", "propagate"]


def _crop(mask: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns of ``mask``'s bounding box grown by one pixel (within the image)."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))


def interior_points(mask: np.ndarray, count: int = 3) -> np.ndarray:
    """(≤ count, 2) float64 (row, col) points deep inside the (H, W) bool ``mask``: the maxima of its distance to
    the background, spread apart (each next point is the deepest one outside the previous ones' neighbourhood).

    Only the mask's bounding box (grown by a pixel of background) is looked at, which gives the same points as
    the whole image: every background pixel beyond it lies behind that ring of background.
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if count <= 0 or not mask.any():
        return np.zeros((0, 2))
    rows, cols = _crop(mask)
    depth = ndimage.distance_transform_edt(mask[rows, cols])
    grid_rows, grid_cols = np.ogrid[: depth.shape[0], : depth.shape[1]]
    points = []
    for _ in range(count):
        if depth.max() <= 0:
            break
        row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
        points.append((row + rows.start, col + cols.start))
        radius = max(2.0, depth[row, col])
        depth = np.where((grid_rows - row) ** 2 + (grid_cols - col) ** 2 <= (1.5 * radius) ** 2, 0, depth)
    return np.asarray(points, dtype=float).reshape(-1, 2)


def _box(mask: np.ndarray) -> list[float]:
    """(row_min, col_min, row_max, col_max) of a non-empty (H, W) bool mask, inclusive pixel indices."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return [float(rows[0]), float(cols[0]), float(rows[-1]), float(cols[-1])]


class SamStepper:
    """Segments each slice with a SAM-1 :class:`Predictor`, prompted from the previous slice of its direction.

    The start slice's result is ``first_mask`` itself (score 1). Every other slice gets the previous mask's box,
    ``settings.n_points`` points deep inside it and, with ``settings.use_mask_input``, its low-res logits (the
    start slice's from :meth:`Predictor.mask_logits`), in one single-mask prediction.
    """

    def __init__(self, predictor: Predictor, first_mask: np.ndarray, run: Run):
        self.predictor, self.first_mask = predictor, first_mask
        self.limits, self.rgb, self.settings = run.contrast_limits, run.has_channels, run.settings

    def segment(self, index: int, plane: np.ndarray, step: int, previous: Segmented | None) -> Segmented:
        predictor, mask_input = self.predictor, self.settings.use_mask_input
        with predictor.locked():  # the slice stays current for its prediction
            if previous is None:
                if not mask_input:
                    return Segmented(self.first_mask, 1.0)
                predictor.set_image(plane, contrast_limits=self.limits, rgb=self.rgb)
                start = predictor.frame_for(boxes=[_box(self.first_mask)])
                return Segmented(self.first_mask, 1.0, (predictor.mask_logits(self.first_mask, frame=start)[0], start))
            predictor.set_image(plane, contrast_limits=self.limits, rgb=self.rgb)
            logits, frame = previous.carry if previous.carry is not None else (None, None)
            prediction = predictor.predict(points=interior_points(previous.mask, self.settings.n_points),
                                           boxes=[_box(previous.mask)],
                                           mask_input=None if logits is None else logits[None], frame=frame,
                                           multimask=False)
        carry = (prediction.logits[0, 0], prediction.frame) if mask_input else None
        mask = prediction.full_masks(prediction.masks[0, :1])[0]  # at the slice's size, whatever frame it came from
        return Segmented(mask, float(prediction.scores[0, 0]), carry)


def propagate(predictor: Predictor, volume, start_index: int, axis: int, first_mask: np.ndarray,
              settings: PropagationSettings | None = None, *, contrast_limits=None, rgb: bool | None = None,
              directions: tuple[int, ...] = (1, -1), progress: Callable[[int, int], None] | None = None,
              cancel: Callable[[], bool] | None = None, **overrides) -> PropagationResult:
    """Extend ``first_mask`` (the object on slice ``start_index``) through ``volume`` along ``axis``.

    Order: the start slice, then forward (+1) to the last slice, then backward (-1) from the start slice. Each
    direction stops at the first slice whose mask is empty, whose predicted IoU is below ``score_threshold``, whose
    IoU with the previous slice's mask is below ``iou_threshold``, or whose area is below ``min_area`` (the start
    slice is kept whatever its size).

    Args:
        predictor: any SAM-1 checkpoint; its current image becomes the slices one after another.
        volume: (…, H, W[, C]) array-like (numpy, dask, zarr: anything with ``shape`` and ``__getitem__``) whose
            ``axis`` runs through the slices (z or t); each slice must be one 2D image (gray, RGB or RGBA). Only one
            plane is read at a time.
        start_index: the slice holding ``first_mask`` (an integer).
        axis: the stack axis of ``volume`` (negative counts from the end).
        first_mask: (H, W) bool, the object on the start slice.
        settings: :class:`PropagationSettings` (None: those the checkpoint recommends,
            ``predictor.recommended.propagation``, as the dock shows them); ``overrides`` are its field names
            (``score_threshold``, ``iou_threshold``, ``min_area``, ``n_points``, ``use_mask_input``) applied on top.
        contrast_limits, rgb: as for :meth:`Predictor.set_image`; the same limits serve every slice (None: the
            start slice's defaults).
        directions: 1 towards higher slice indices, -1 towards lower ones (both by default; one of them to
            re-propagate from a corrected slice away from the first one).
        progress: ``progress(done, total)`` after each slice; cancel: checked before each slice, returning True
            raises :class:`~napari_sam.core.errors.SegmentationCancelled`.

    Returns :class:`PropagationResult` (slices first whatever ``axis``); its scores are predicted IoUs (1 on the
    start slice). Raises ValueError for bad arguments, naming the problem.
    """
    if settings is None and isinstance(predictor, Predictor):  # not a Predictor: prepare_run names what's wrong
        settings = predictor.recommended.propagation
    run = prepare_run(volume, start_index, axis, contrast_limits=contrast_limits, rgb=rgb, directions=directions,
                      settings=settings, overrides=overrides)
    first_mask = np.asarray(first_mask, dtype=bool)
    if first_mask.shape != run.stack.size:
        raise ValueError(f"first_mask has shape {first_mask.shape}, the slices {run.stack.size}.")
    if not first_mask.any():
        raise ValueError("first_mask is empty: segment the object first.")
    return drive(SamStepper(predictor, first_mask, run), run, progress=progress, cancel=cancel)
