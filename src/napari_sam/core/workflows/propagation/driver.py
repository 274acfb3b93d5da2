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
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ...errors import SegmentationCancelled
from ...image import check_contrast_limits, default_contrast_limits, image_layout
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


@dataclass(frozen=True)
class Segmented:
    """One slice as a :class:`SliceStepper` segmented it.

    Attributes:
        mask: (H, W) bool, the object on the slice.
        score: the model's confidence (SAM: predicted IoU; video models: object score in [0, 1]).
        carry: anything the stepper wants back with the next slice of the same direction (SAM: low-res logits).
    """

    mask: np.ndarray
    score: float
    carry: Any = None


class SliceStepper(Protocol):
    """How one model segments one slice; :func:`drive` does the rest."""

    def segment(self, index: int, plane: np.ndarray, step: int, previous: Segmented | None) -> Segmented:
        """Segment slice ``index``.

        Args:
            index: the slice index along the stack axis.
            plane: that slice, (H, W), (H, W, 3) or (H, W, 4), as read from the volume.
            step: 0 for the start slice, then +1 or -1: the direction being propagated.
            previous: None for the start slice; else the last slice kept in this direction (the start slice's
                result for the first step of each direction).
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


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def stops(current: Segmented, previous: Segmented, settings: PropagationSettings) -> bool:
    """Whether a direction ends at ``current``: its mask is empty (the object has ended, whatever the thresholds),
    or its score, its area, or its IoU with ``previous`` is too low."""
    area = int(np.count_nonzero(current.mask))
    return (area == 0 or current.score < settings.score_threshold or area < settings.min_area
            or _iou(current.mask, previous.mask) < settings.iou_threshold)


def drive(stepper: SliceStepper, run: Run, *, progress: Callable[[int, int], None] | None = None,
          cancel: Callable[[], bool] | None = None,
          on_slice: Callable[[int, np.ndarray, float], None] | None = None) -> PropagationResult:
    """Segment the start slice, then each direction of ``run.steps`` until a stop rule fires or the stack ends.

    The start slice is kept whatever its score and size; an empty start mask is not propagated. A direction keeps
    the slices before the first one that :func:`stops`, and segments none beyond it.

    Args:
        stepper: segments one slice.
        run: from :func:`prepare_run`.
        progress: ``progress(done, total)`` after each slice segmented, and ``(total, total)`` at the end.
        cancel: checked before each slice; returning True raises :class:`SegmentationCancelled`.
        on_slice: ``on_slice(index, mask, score)`` for each slice kept, in processing order.
    """
    stack, start = run.stack, run.start_index
    n_slices = stack.n_slices
    total = 1 + sum(n_slices - 1 - start if step > 0 else start for step in run.steps)
    masks = np.zeros((n_slices, *stack.size), dtype=bool)
    scores = np.full(n_slices, np.nan, dtype=np.float32)
    bounds, done = [start, start], 0

    def segment(index: int, step: int, previous: Segmented | None) -> Segmented:
        nonlocal done
        if cancel is not None and cancel():
            raise SegmentationCancelled()
        plane = run.start_plane if index == start else stack.plane(index)
        found = stepper.segment(index, plane, step, previous)
        done += 1
        if progress is not None:
            progress(done, total)
        return found

    def keep(index: int, found: Segmented) -> None:
        masks[index], scores[index] = found.mask, found.score
        if on_slice is not None:
            on_slice(index, found.mask, found.score)

    first = segment(start, 0, None)
    keep(start, first)
    for step in run.steps if first.mask.any() else ():
        previous, index = first, start + step
        while 0 <= index < n_slices:
            found = segment(index, step, previous)
            if stops(found, previous, run.settings):
                break
            keep(index, found)
            bounds[0 if step < 0 else 1] = index
            previous, index = found, index + step
    if progress is not None:
        progress(total, total)
    return PropagationResult(masks=masks, scores=scores, start=bounds[0], stop=bounds[1])
