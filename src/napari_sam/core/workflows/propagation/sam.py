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

from ...image import Frame
from ...objects import mask_box
from ...predictor import Predictor
from ...settings import PropagationSettings
from .driver import (
    PropagatedObjects,
    PropagationResult,
    Run,
    Segmented,
    first_masks,
    prepare_run,
    propagate_many,
    propagate_one,
)

__all__ = ["PropagatedObjects", "PropagationResult", "SamStepper", "interior_points", "propagate", "propagate_objects"]


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
    box = mask_box(mask)  # grown by one pixel (within the image)
    rows, cols = slice(max(box[0] - 1, 0), box[2] + 2), slice(max(box[1] - 1, 0), box[3] + 2)
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


#: The most a zoom window magnifies an object: the window is at least the model's input side over this.
MAX_ZOOM = 4.0


def prompt_box(mask: np.ndarray) -> np.ndarray:
    """(4,) the box prompt of a non-empty (H, W) bool mask: its :func:`mask_box`, with a side of one pixel widened
    by half a pixel each way (a box needs height and width)."""
    box = np.asarray(mask_box(mask), dtype=np.float64)
    for low, high in ((0, 2), (1, 3)):
        if box[high] <= box[low]:
            box[low], box[high] = box[low] - 0.5, box[high] + 0.5
    return box


def _padded(points: np.ndarray, count: int) -> np.ndarray:
    """(count, 2) points: ``points`` with its first point repeated to fill (at least one point is needed)."""
    return np.concatenate([points, np.repeat(points[:1], count - len(points), axis=0)])


class SamStepper:
    """Segments objects on each slice with a SAM-1 :class:`Predictor`, each prompted from its previous slice.

    The start slice's result is each of ``first_masks`` itself (score 1). On every other slice each object gets
    its previous mask's box, ``settings.n_points`` points deep inside it and, with ``settings.use_mask_input``, its
    low-res logits (the start slice's from :meth:`Predictor.mask_logits`), in one single-mask prediction. One object
    is decoded in a window magnified around it when it is small (``settings.zoom``, :meth:`zoomed`). Several
    objects share one encoder run per slice: on an image seen whole, all of them in one batched decode; on a tiled
    one, each in its own frame.
    """

    def __init__(self, predictor: Predictor, first_masks: dict[int, np.ndarray], run: Run):
        self.predictor, self.first_masks = predictor, first_masks
        self.limits, self.rgb, self.settings = run.contrast_limits, run.has_channels, run.settings

    def segment(self, index: int, plane: np.ndarray, step: int,
                previous: dict[int, Segmented] | None) -> dict[int, Segmented]:
        predictor = self.predictor
        with predictor.locked():  # the slice stays current for its predictions
            if previous is None:
                return self._start(plane)
            predictor.set_image(plane, contrast_limits=self.limits, rgb=self.rgb)
            if predictor.tiled or len(previous) == 1:
                return {object_id: self._one(found) for object_id, found in previous.items()}
            return self._batched(previous)

    def _start(self, plane: np.ndarray) -> dict[int, Segmented]:
        predictor, masks = self.predictor, self.first_masks
        if not self.settings.use_mask_input:
            return {object_id: Segmented(mask, 1.0) for object_id, mask in masks.items()}
        predictor.set_image(plane, contrast_limits=self.limits, rgb=self.rgb)
        if predictor.tiled:
            found = {}
            for object_id, mask in masks.items():
                frame = predictor.frame_for(boxes=[prompt_box(mask)])
                found[object_id] = Segmented(mask, 1.0, (predictor.mask_logits(mask, frame=frame)[0], frame))
            return found
        frame = predictor.frame_for(boxes=[prompt_box(mask) for mask in masks.values()])
        logits = predictor.mask_logits(np.stack(list(masks.values())), frame=frame)
        return {object_id: Segmented(mask, 1.0, (logits[row], frame))
                for row, (object_id, mask) in enumerate(masks.items())}

    def zoomed(self, mask: np.ndarray) -> Frame | None:
        """A square window around ``mask``, ``settings.zoom`` times its size (at least the model's input over
        :data:`MAX_ZOOM`), when it lies inside the image and magnifies the object more than the frame the predictor
        would choose; else None."""
        predictor, zoom = self.predictor, self.settings.zoom
        if zoom <= 0:
            return None
        row0, col0, row1, col1 = mask_box(mask)
        height, width = mask.shape
        input_size = predictor.geometry.longest_edge
        side = int(np.ceil(max(zoom * max(row1 - row0 + 1, col1 - col0 + 1), input_size / MAX_ZOOM)))
        scale = input_size / side
        if side >= min(height, width) or scale <= predictor.frame_for(boxes=[prompt_box(mask)]).scale:
            return None
        top = int(np.clip(round((row0 + row1 + 1 - side) / 2), 0, height - side))
        left = int(np.clip(round((col0 + col1 + 1 - side) / 2), 0, width - side))
        return Frame(top, left, top + side, left + side, scale)

    def _one(self, previous: Segmented) -> Segmented:
        """One object in a window magnified around it (:meth:`zoomed`), or in the frame its prompts choose (the
        previous slice's, when they still fit it)."""
        logits, frame = previous.carry if previous.carry is not None else (None, None)
        window = self.zoomed(previous.mask)
        if window is not None:
            logits = None if logits is None else self.predictor.mask_logits(previous.mask, frame=window)[0]
            frame = window
        prediction = self.predictor.predict(points=interior_points(previous.mask, self.settings.n_points),
                                            boxes=[prompt_box(previous.mask)],
                                            mask_input=None if logits is None else logits[None], frame=frame,
                                            multimask=False, grow=window is None)
        carry = (prediction.logits[0, 0], prediction.frame) if self.settings.use_mask_input else None
        mask = prediction.full_masks(prediction.masks[0, :1])[0]  # at the slice's size, whatever frame it came from
        return Segmented(mask, float(prediction.scores[0, 0]), carry)

    def _batched(self, previous: dict[int, Segmented]) -> dict[int, Segmented]:
        """Every object in one decoder call on the whole image."""
        ids = list(previous)
        count = self.settings.n_points
        points = np.stack([_padded(interior_points(previous[i].mask, count), count) for i in ids]) if count else None
        boxes = np.stack([prompt_box(previous[i].mask) for i in ids])
        carries = [previous[i].carry for i in ids]
        logits = None if carries[0] is None else np.stack([carry[0] for carry in carries])
        prediction = self.predictor.predict(points=points, boxes=boxes, mask_input=logits,
                                            frame=None if logits is None else carries[0][1], multimask=False)
        return {object_id: Segmented(prediction.masks[row, 0], float(prediction.scores[row, 0]),
                                     (prediction.logits[row, 0], prediction.frame)
                                     if self.settings.use_mask_input else None)
                for row, object_id in enumerate(ids)}


def propagate(predictor: Predictor, volume, start_index: int, axis: int, first_mask: np.ndarray,
              settings: PropagationSettings | None = None, *, contrast_limits=None, rgb: bool | None = None,
              directions: tuple[int, ...] = (1, -1), bounds: tuple[int | None, int | None] | None = None,
              progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
              **overrides) -> PropagationResult:
    """Extend ``first_mask`` (the object on slice ``start_index``) through ``volume`` along ``axis``.

    Order: the start slice, then forward (+1) to the last slice, then backward (-1) from the start slice. Each
    direction stops at the first slice whose mask is empty, whose predicted IoU is below ``score_threshold``, whose
    IoU with the previous slice's mask is below ``iou_threshold``, whose area is below ``min_area``, whose area
    grows again after narrowing (``max_regrowth``) or whose centre jumps (``max_shift``); the start slice is kept
    whatever its size. A small object is segmented in a window magnified around it (``zoom``).

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
            (``score_threshold``, ``iou_threshold``, ``min_area``, ``max_regrowth``, ``max_shift``, ``n_points``,
            ``zoom``, ``use_mask_input``) applied on top.
        contrast_limits, rgb: as for :meth:`Predictor.set_image`; the same limits serve every slice (None: the
            start slice's defaults).
        directions: 1 towards higher slice indices, -1 towards lower ones (both by default; one of them to
            re-propagate from a corrected slice away from the first one).
        bounds: (first, last): the slices the object may reach, as the user says "it ends here" (either may be
            None: the stack's end); they must hold ``start_index``.
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
    return propagate_one(SamStepper(predictor, {1: first_mask}, run), run, bounds, progress, cancel)


def propagate_objects(predictor: Predictor, volume, start_index: int, axis: int, labels_plane,
                      settings: PropagationSettings | None = None, *, ids=None, contrast_limits=None,
                      rgb: bool | None = None, directions: tuple[int, ...] = (1, -1), bounds: dict | None = None,
                      progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
                      **overrides) -> PropagatedObjects:
    """Carry every object of ``labels_plane`` (the labels of slice ``start_index``) through ``volume`` at once.

    Each slice is encoded once for all the objects still followed, which are decoded together; each object keeps
    its id and its own stop rules (as :func:`propagate`'s), and no pixel is given to two objects (a contested pixel
    goes to the object that held it on the previous slice, else to the higher score).

    ``predictor``, ``volume``, ``start_index``, ``axis``, ``settings``, ``contrast_limits``, ``rgb``,
    ``directions``, ``progress``, ``cancel`` and ``overrides`` are as for :func:`propagate`.

    Args:
        labels_plane: (H, W) integer labels of the start slice; each id > 0 is an object.
        ids: the objects to carry (default: every object of ``labels_plane``).
        bounds: by object id, (first, last) slices that object may reach, as :func:`propagate`'s ``bounds``.

    Returns :class:`PropagatedObjects`: a (n_slices, H, W) uint32 labels volume (slices first whatever ``axis``)
    holding the start slice's objects and their propagation, each object's scores and extent. Raises ValueError for
    bad arguments, naming the problem.
    """
    if settings is None and isinstance(predictor, Predictor):
        settings = predictor.recommended.propagation
    run = prepare_run(volume, start_index, axis, contrast_limits=contrast_limits, rgb=rgb, directions=directions,
                      settings=settings, overrides=overrides)
    masks = first_masks(labels_plane, run.stack.size, ids)
    return propagate_many(SamStepper(predictor, masks, run), run, list(masks), bounds, progress, cancel)
