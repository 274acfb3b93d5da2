"""The one driver that carries an object through a z-stack or time-lapse, whatever model segments each slice.

:func:`drive` holds everything that SAM-1 propagation
(:func:`~napari_sam.core.workflows.propagation.sam.propagate`) and SAM2-family video propagation
(:func:`~napari_sam.core.workflows.propagation.video.propagate_video`) share: the order of the slices (the start
slice, then forward (+1) to the last slice, then backward (-1) from the start slice to the first),
the stop rules of :class:`~napari_sam.core.settings.PropagationSettings`, progress, cancelling and the
:class:`PropagationResult`. How one slice is segmented is a :class:`SliceStepper`'s business.

Volumes are read one plane at a time (``np.asarray(volume[index tuple])``), so they may be dask or zarr arrays (or
any object with ``shape`` and ``__getitem__``) far larger than memory.

Positions are (row, col) in the slices' data pixels; ``axis`` is the stack axis of the volume.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from ...errors import SegmentationCancelled
from ...image import check_contrast_limits, default_contrast_limits, image_layout
from ...objects import mask_iou
from ...settings import PropagationSettings


@dataclass
class PropagationResult:
    """The object through the stack.

    Attributes:
        masks: (n_slices, H, W) bool, slices first whatever the stack axis: the object on every slice it reaches
            (allocated zeroed, so the pages of slices never reached take no memory on common systems).
        scores: (n_slices,) float32 score per slice (SAM: predicted IoU, 1 on the start slice; video models: object
            score in [0, 1]), NaN where the object was not propagated.
        start, stop: the first and last slice index (inclusive) holding the object.
    """

    masks: np.ndarray
    scores: np.ndarray
    start: int
    stop: int


@dataclass
class PropagatedObjects:
    """Many objects through the stack, each with its id.

    Attributes:
        labels: (n_slices, H, W) uint32, slices first whatever the stack axis: each object's id where it is, 0
            elsewhere (no pixel holds two objects).
        scores: by object id, (n_slices,) float32 score per slice as in :class:`PropagationResult` (NaN where the
            object was not kept).
        extents: by object id, the first and last slice index (inclusive) holding the object.
    """

    labels: np.ndarray
    scores: dict[int, np.ndarray]
    extents: dict[int, tuple[int, int]]


@dataclass(frozen=True)
class Segmented:
    """One object on one slice, as a :class:`SliceStepper` segmented it.

    Attributes:
        mask: (H, W) bool, the object on the slice.
        score: the model's confidence (SAM: predicted IoU; video models: object score in [0, 1]).
        carry: anything the stepper wants back with the next slice of the same direction (SAM: low-res logits).
    """

    mask: np.ndarray
    score: float
    carry: Any = None


class SliceStepper(Protocol):
    """How one model segments the objects on one slice; :func:`drive` does the rest."""

    def segment(self, index: int, plane: np.ndarray, step: int,
                previous: dict[int, Segmented] | None) -> dict[int, Segmented]:
        """Segment objects on slice ``index``.

        Args:
            index: the slice index along the stack axis.
            plane: that slice, (H, W), (H, W, 3) or (H, W, 4), as read from the volume.
            step: 0 for the start slice, then +1 or -1: the direction being propagated.
            previous: None for the start slice (segment every object); else, by object id, the last slice kept of
                each object still followed in this direction (the start slice's result for the first step of each
                direction). Segment those objects alone.

        Returns each object's result by id.
        """


@dataclass(frozen=True)
class Stack:
    """A volume read one plane at a time along ``axis`` (0 <= axis < ndim).

    Attributes:
        volume: any array-like with ``shape`` and ``__getitem__`` (numpy, dask, zarr).
        axis: the stack axis.
        n_slices: the volume's length along ``axis``.
        plane_shape: the shape of one plane: (H, W), (H, W, 3) or (H, W, 4).
    """

    volume: Any
    axis: int
    n_slices: int
    plane_shape: tuple[int, ...]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the slices."""
        return self.plane_shape[0], self.plane_shape[1]

    def plane(self, index: int) -> np.ndarray:
        """Slice ``index`` as a numpy array of ``plane_shape``; only that plane is read."""
        plane = np.asarray(self.volume[(slice(None),) * self.axis + (index,)])
        if plane.shape != self.plane_shape:
            raise ValueError(f"Slice {index} read as shape {plane.shape}, expected {self.plane_shape}.")
        return plane


@dataclass(frozen=True)
class Run:
    """A checked propagation request, shared by both models.

    Attributes:
        stack: the volume, read lazily.
        start_index: the start slice (0 <= start_index < n_slices).
        start_plane: that slice, already read.
        has_channels: whether the slices are RGB(A).
        contrast_limits: (low, high) serving every slice.
        steps: the directions in propagation order: (1, -1), (1,) or (-1,).
        settings: the stop rules and SAM options in effect.
    """

    stack: Stack
    start_index: int
    start_plane: np.ndarray
    has_channels: bool
    contrast_limits: tuple[float, float]
    steps: tuple[int, ...]
    settings: PropagationSettings


def _integer(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    return int(value)


def resolve_settings(settings: PropagationSettings | None, overrides: dict) -> PropagationSettings:
    """``settings`` (None: the defaults) with ``overrides`` (PropagationSettings field names) applied and checked."""
    if settings is None:
        settings = PropagationSettings()
    elif not isinstance(settings, PropagationSettings):
        raise ValueError(f"settings must be a PropagationSettings (or None for the defaults), got {settings!r}; "
                         "single settings can also be given as keywords, e.g. score_threshold=0.5.")
    return settings.replace(**overrides) if overrides else settings


def check_directions(directions) -> tuple[int, ...]:
    """The directions in propagation order (forward first) from any non-empty collection of 1 and -1."""
    try:
        chosen = set(directions)
    except TypeError:
        chosen = None
    if not chosen or not chosen <= {1, -1}:
        raise ValueError(f"directions must be 1, -1 or both, e.g. (1, -1), not {directions!r}.")
    return tuple(step for step in (1, -1) if step in chosen)


def open_stack(volume, axis) -> Stack:
    """Check ``volume`` and ``axis`` without reading any data; a ValueError names what is wrong."""
    if not hasattr(volume, "shape") or not hasattr(volume, "__getitem__"):
        volume = np.asarray(volume)
    shape = tuple(int(s) for s in volume.shape)
    ndim = len(shape)
    axis = _integer(axis, "axis")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a volume of shape {shape} ({ndim} axes).")
    axis %= ndim
    plane_shape = shape[:axis] + shape[axis + 1:]
    if len(plane_shape) not in (2, 3):
        raise ValueError(f"Each slice along axis {axis} of a volume of shape {shape} has shape {plane_shape}: it must "
                         "be one 2D image (H, W), (H, W, 3) or (H, W, 4). Fix the other leading axes first.")
    return Stack(volume, axis, shape[axis], plane_shape)


def prepare_run(volume, start_index, axis, *, contrast_limits=None, rgb=None, directions=(1, -1),
                settings: PropagationSettings | None = None, overrides: dict | None = None) -> Run:
    """Check everything both propagation paths take and read the start slice (the only plane read here).

    Default contrast limits come from the start slice alone (see :func:`default_contrast_limits`).

    Raises:
        ValueError: a non-integer or out-of-range ``start_index`` or ``axis``, slices that are not 2D images,
            bad ``contrast_limits``, ``rgb``, ``directions``, ``settings`` or unknown ``overrides``.
    """
    settings = resolve_settings(settings, overrides or {})
    steps = check_directions(directions)
    limits = None if contrast_limits is None else check_contrast_limits(contrast_limits)
    if rgb is not None and not isinstance(rgb, (bool, np.bool_)):
        raise ValueError(f"rgb must be True, False or None (guess from the shape), got {rgb!r}.")
    stack = open_stack(volume, axis)
    start_index = _integer(start_index, "start_index")
    if not 0 <= start_index < stack.n_slices:
        raise ValueError(f"start_index {start_index} is outside the {stack.n_slices} slices along axis {stack.axis}.")
    start_plane = stack.plane(start_index)
    has_channels = image_layout(start_plane, None if rgb is None else bool(rgb))
    if limits is None:
        limits = default_contrast_limits(start_plane, has_channels)
    return Run(stack, start_index, start_plane, has_channels, limits, steps, settings)


#: The regrowth rule watches an object once its area has fallen below this share of its widest slice.
REGROWTH_FALL = 0.85


def centre_shift(mask: np.ndarray, previous: np.ndarray) -> float:
    """How far the centre of ``mask`` lies from that of ``previous``, in radii of ``previous`` (the radius of a disc
    of its area)."""
    rows, cols = np.nonzero(previous)
    now_rows, now_cols = np.nonzero(mask)
    distance = np.hypot(now_rows.mean() - rows.mean(), now_cols.mean() - cols.mean())
    return float(distance / np.sqrt(len(rows) / np.pi))


def stops(current: Segmented, previous: Segmented, settings: PropagationSettings,
          trend: tuple[int, int] | None = None) -> bool:
    """Whether a direction ends at ``current``: its mask is empty (the object has ended, whatever the settings);
    its score, its area, or its IoU with ``previous`` is too low; its centre moved too far from ``previous``'s; or,
    given the ``trend`` (the widest area so far in this direction, and the narrowest since), it widens again after
    narrowing (see :class:`~napari_sam.core.settings.PropagationSettings`)."""
    area = int(np.count_nonzero(current.mask))
    if area == 0 or current.score < settings.score_threshold or area < settings.min_area:
        return True
    if mask_iou(current.mask, previous.mask) < settings.iou_threshold:
        return True
    if settings.max_shift > 0 and centre_shift(current.mask, previous.mask) > settings.max_shift:
        return True
    if settings.max_regrowth > 0 and trend is not None:
        peak, valley = trend
        return valley <= REGROWTH_FALL * peak and area > settings.max_regrowth * valley
    return False


def widened(trend: tuple[int, int], mask: np.ndarray) -> tuple[int, int]:
    """The (widest, narrowest since) areas of a direction once ``mask`` is kept."""
    area = int(np.count_nonzero(mask))
    peak, valley = trend
    return (area, area) if area > peak else (peak, min(valley, area))


def claimed_once(found: dict[int, Segmented], previous: dict[int, Segmented]) -> dict[int, Segmented]:
    """``found`` with every pixel that several objects claim given to one of them: the object that held it on the
    previous slice when exactly one of them did, else the one with the highest score. Objects left with no pixel
    are dropped."""
    if len(found) < 2:
        return found
    ids = list(found)
    masks = np.stack([found[i].mask for i in ids])
    contested = np.count_nonzero(masks, axis=0) > 1
    if not contested.any():
        return found
    rows, cols = np.nonzero(contested)
    claims = masks[:, rows, cols]  # (objects, contested pixels)
    held = np.stack([previous[i].mask[rows, cols] if i in previous else np.zeros(len(rows), bool) for i in ids])
    scores = np.array([found[i].score for i in ids], dtype=np.float64)
    rank = np.argsort(np.argsort(scores))  # 0 for the lowest score
    priority = np.where(claims, 1 + rank[:, None] + len(ids) * (held & (held.sum(axis=0) == 1)), 0)
    owner = np.argmax(priority, axis=0)
    kept = {}
    for position, object_id in enumerate(ids):
        mask = found[object_id].mask
        lost = claims[position] & (owner != position)
        if lost.any():
            mask = mask.copy()
            mask[rows[lost], cols[lost]] = False
        if mask.any():
            kept[object_id] = replace(found[object_id], mask=mask)
    return kept


def drive(stepper: SliceStepper, run: Run, *, bounds: dict[int, tuple[int, int]] | None = None,
          progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
          on_slice: Callable[[int, dict[int, Segmented]], None] | None = None) -> dict[int, tuple[int, int]]:
    """Segment the start slice, then follow each object in each direction of ``run.steps`` until a stop rule fires,
    its bound is passed or the stack ends.

    The start slice is kept whatever its scores and sizes; an object empty there is not propagated. A direction
    keeps an object's slices before the first one that :func:`stops` (given the object's widest and narrowest areas
    so far in that direction), and segments none of it beyond. Objects
    are followed together: each slice is read and segmented once for all the objects still followed, and no pixel
    is given to two objects (:func:`claimed_once`).

    Args:
        stepper: segments the objects on one slice.
        run: from :func:`prepare_run`.
        bounds: by object id, the (first, last) slice the object may reach (see :func:`check_bounds`).
        progress: ``progress(done, total)`` after each slice segmented, and ``(total, total)`` at the end.
        cancel: checked before each slice; returning True raises :class:`SegmentationCancelled`.
        on_slice: ``on_slice(index, kept)`` for each slice segmented, in processing order, with the objects kept
            on it by id.

    Returns, by object id, the (first, last) slice (inclusive) that holds it.
    """
    stack, start = run.stack, run.start_index
    n_slices = stack.n_slices
    total = 1 + sum(n_slices - 1 - start if step > 0 else start for step in run.steps)
    done = 0

    def segment(index: int, step: int, previous: dict[int, Segmented] | None) -> dict[int, Segmented]:
        nonlocal done
        if cancel is not None and cancel():
            raise SegmentationCancelled()
        plane = run.start_plane if index == start else stack.plane(index)
        found = stepper.segment(index, plane, step, previous)
        done += 1
        if progress is not None:
            progress(done, total)
        return found

    first = segment(start, 0, None)
    if on_slice is not None:
        on_slice(start, first)
    extents = {object_id: [start, start] for object_id in first}
    for step in run.steps:
        previous = {i: found for i, found in first.items() if found.mask.any()}
        trends = {i: widened((0, 0), found.mask) for i, found in previous.items()}
        index = start + step
        while 0 <= index < n_slices:
            if bounds:
                previous = {i: found for i, found in previous.items()
                            if i not in bounds or bounds[i][0] <= index <= bounds[i][1]}
            if not previous:
                break
            found = segment(index, step, previous)
            kept = claimed_once({i: f for i, f in found.items()
                                 if not stops(f, previous[i], run.settings, trends[i])}, previous)
            if on_slice is not None:
                on_slice(index, kept)
            for object_id, segmented in kept.items():
                extents[object_id][0 if step < 0 else 1] = index
                trends[object_id] = widened(trends[object_id], segmented.mask)
            previous, index = kept, index + step
    if progress is not None:
        progress(total, total)
    return {object_id: (low, high) for object_id, (low, high) in extents.items()}


def check_bounds(bounds, n_slices: int, start: int) -> tuple[int, int]:
    """(first, last) slices an object may reach, from ``bounds`` (None, or a pair whose None ends are the stack's
    ends) checked against a stack of ``n_slices`` propagated from ``start``.

    Raises:
        ValueError: a bound that is not an integer, lies outside the stack, or leaves out the start slice.
    """
    if bounds is None:
        return 0, n_slices - 1
    try:
        low, high = bounds
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be (first slice, last slice), either of them None, got {bounds!r}.") from None
    low = 0 if low is None else _integer(low, "the first slice of bounds")
    high = n_slices - 1 if high is None else _integer(high, "the last slice of bounds")
    if not 0 <= low <= high < n_slices:
        raise ValueError(f"bounds ({low}, {high}) must lie within the {n_slices} slices, the first before the last.")
    if not low <= start <= high:
        raise ValueError(f"bounds ({low}, {high}) leave out the start slice {start}: the object is on it, so it "
                         "cannot end before it.")
    return low, high


def propagate_one(stepper: SliceStepper, run: Run, bounds=None, progress=None, cancel=None,
                  on_slice: Callable[[int, np.ndarray, float], None] | None = None) -> PropagationResult:
    """:func:`drive` one object (id 1) and gather it as a :class:`PropagationResult`; ``on_slice(index, mask,
    score)`` for each slice kept."""
    n_slices = run.stack.n_slices
    first, last = check_bounds(bounds, n_slices, run.start_index)
    masks = np.zeros((n_slices, *run.stack.size), dtype=bool)
    scores = np.full(n_slices, np.nan, dtype=np.float32)

    def keep(index: int, kept: dict[int, Segmented]) -> None:
        if 1 in kept:
            masks[index], scores[index] = kept[1].mask, kept[1].score
            if on_slice is not None:
                on_slice(index, kept[1].mask, kept[1].score)

    extents = drive(stepper, run, bounds={1: (first, last)}, progress=progress, cancel=cancel, on_slice=keep)
    start, stop = extents[1]
    return PropagationResult(masks=masks, scores=scores, start=start, stop=stop)


def first_masks(labels_plane, size: tuple[int, int], ids=None) -> dict[int, np.ndarray]:
    """The objects of a (H, W) labels plane by id (``ids``: those alone), each as a bool mask.

    Raises:
        ValueError: a plane of another shape than the slices, or not integer labels, ids not on it, or no object.
    """
    plane = np.asarray(labels_plane)
    if plane.shape != size:
        raise ValueError(f"labels_plane has shape {plane.shape}, the slices {size}: give the labels of the start "
                         "slice alone.")
    if not (np.issubdtype(plane.dtype, np.integer) or plane.dtype == bool):
        raise ValueError(f"labels_plane must hold integer labels, got dtype {plane.dtype}.")
    present = [int(i) for i in np.unique(plane) if i > 0]
    if ids is not None:
        wanted = [int(i) for i in ids]
        missing = sorted(set(wanted) - set(present))
        if missing:
            raise ValueError(f"objects {missing} are not on the start slice's labels.")
        present = [i for i in present if i in wanted]
    if not present:
        raise ValueError("labels_plane holds no object (every pixel is 0): segment or paint objects first.")
    return {object_id: plane == object_id for object_id in present}


def propagate_many(stepper: SliceStepper, run: Run, ids, bounds: dict | None = None, progress=None,
                   cancel=None) -> PropagatedObjects:
    """:func:`drive` the objects ``ids`` and gather them as :class:`PropagatedObjects` (``bounds`` by id, each as
    for :func:`check_bounds`)."""
    n_slices = run.stack.n_slices
    checked = {int(i): check_bounds(b, n_slices, run.start_index) for i, b in (bounds or {}).items()}
    unknown = set(checked) - set(ids)
    if unknown:
        raise ValueError(f"bounds name objects {sorted(unknown)} that are not on the start slice.")
    labels = np.zeros((n_slices, *run.stack.size), dtype=np.uint32)
    scores = {i: np.full(n_slices, np.nan, dtype=np.float32) for i in ids}

    def keep(index: int, kept: dict[int, Segmented]) -> None:
        for object_id, found in kept.items():
            labels[index][found.mask] = object_id
            scores[object_id][index] = found.score

    extents = drive(stepper, run, bounds=checked, progress=progress, cancel=cancel, on_slice=keep)
    return PropagatedObjects(labels=labels, scores=scores, extents=extents)
