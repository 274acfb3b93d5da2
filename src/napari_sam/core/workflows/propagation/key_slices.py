"""Filling the slices between key slices: the user gives an object on two or more slices, the slices between them
are segmented.

Each gap between two key slices is propagated from both ends, SAM prompting each slice from the previous one as in
:func:`~napari_sam.core.workflows.propagation.sam.propagate`. On each slice of the gap the two passes vote, each
weighted by its closeness to its key slice: where they agree the pixel is kept whatever the weights, where they
disagree the nearer key slice decides. A pass that ends early (the object seemed to end) leaves its slices to the
other; slices neither pass reaches take the shape interpolated between the two key masks (signed distances).

Positions are (row, col) in the slices' data pixels; ``axis`` is the stack axis of ``volume``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

from ...predictor import Predictor
from ...settings import PropagationSettings
from .driver import PropagationResult, Run, open_stack, prepare_run, propagate_one
from .sam import SamStepper


def check_keys(keys, n_slices: int, size: tuple[int, int]) -> dict[int, np.ndarray]:
    """``keys`` ({slice index: (H, W) mask}) checked, as bool masks sorted by slice.

    Raises:
        ValueError: fewer than two key slices, an index that is not one integer slice of the stack (a tuple
            naming other axes' planes included), a mask of another shape than the slices, or an empty mask.
    """
    if not isinstance(keys, dict):
        raise ValueError(f"keys must be a dict {{slice index: mask}}, got {type(keys).__name__}.")
    checked = {}
    for index, mask in keys.items():
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, numbers.Integral):
            raise ValueError(f"Key slice {index!r} is not one slice index along the stack axis: key slices must lie "
                             "on that axis, with the other axes' planes fixed by the volume given.")
        if not 0 <= int(index) < n_slices:
            raise ValueError(f"Key slice {index} is outside the {n_slices} slices of the stack axis.")
        array = np.asarray(mask)
        if array.shape != size:
            raise ValueError(f"The mask of key slice {index} has shape {array.shape}, the slices {size}.")
        if not array.any():
            raise ValueError(f"The mask of key slice {index} is empty: the object must be drawn on each key slice.")
        checked[int(index)] = array.astype(bool)
    if len(checked) < 2:
        raise ValueError(f"Key slices fill the slices between them: give the object on two or more slices, got "
                         f"{len(checked)}.")
    return dict(sorted(checked.items()))


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the mask's outline, positive inside and negative outside (float32)."""
    from scipy import ndimage

    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return (inside - outside).astype(np.float32)


def _pass(predictor: Predictor, run: Run, start: int, mask: np.ndarray, towards: int, progress,
          cancel) -> PropagationResult:
    """Propagate ``mask`` from slice ``start`` one way, up to (not including) the key slice ``towards``."""
    step = 1 if towards > start else -1
    # the object lies on every slice between its key slices, widening from a tip: only the score and a jump of the
    # mask's centre (to another object) end a pass
    settings = run.settings.replace(min_area=0, max_regrowth=0.0, iou_threshold=0.0)
    stepped = Run(run.stack, start, run.stack.plane(start), run.has_channels, run.contrast_limits, (step,), settings)
    bounds = (start, towards - 1) if step > 0 else (towards + 1, start)
    return propagate_one(SamStepper(predictor, {1: mask}, stepped), stepped, bounds, progress, cancel)


def interpolate(predictor: Predictor, volume, axis: int, keys: dict, settings: PropagationSettings | None = None, *,
                contrast_limits=None, rgb: bool | None = None, progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None, **overrides) -> PropagationResult:
    """The object through the slices between its key slices.

    Args:
        predictor: any SAM-1 checkpoint; its current image becomes the slices one after another.
        volume: as for :func:`~napari_sam.core.workflows.propagation.sam.propagate`.
        axis: the stack axis of ``volume``.
        keys: {slice index: (H, W) bool mask} of the object on two or more slices.
        settings: :class:`PropagationSettings` (None: the checkpoint's recommendation), ``overrides`` (its field
            names) applied on top. The object is taken to lie on every slice between its key slices, so a pass ends
            early only where the score is too low or the mask's centre jumps (to another object); the area,
            overlap and regrowth rules are off.
        contrast_limits, rgb: as for :meth:`Predictor.set_image`, the same for every slice (None: the first key
            slice's defaults).
        progress: ``progress(done, total)`` after each slice; cancel: checked before each slice, returning True
            raises :class:`~napari_sam.core.errors.SegmentationCancelled`.

    Returns :class:`PropagationResult` holding masks only from the first to the last key slice (the key slices as
    given); scores are 1 on key slices, the mean of the passes' predicted IoUs between, NaN outside.

    Raises ValueError for bad arguments (see :func:`check_keys`), naming the problem.
    """
    if settings is None and isinstance(predictor, Predictor):
        settings = predictor.recommended.propagation
    stack = open_stack(volume, axis)
    keys = check_keys(keys, stack.n_slices, stack.size)
    slices = list(keys)
    run = prepare_run(volume, slices[0], axis, contrast_limits=contrast_limits, rgb=rgb, directions=(1,),
                      settings=settings, overrides=overrides)
    masks = np.zeros((stack.n_slices, *stack.size), dtype=bool)
    scores = np.full(stack.n_slices, np.nan, dtype=np.float32)
    total = sum(2 * max(high - low - 1, 0) for low, high in zip(slices, slices[1:]))
    done = 0
    for index, mask in keys.items():
        masks[index], scores[index] = mask, 1.0
    for low, high in zip(slices, slices[1:]):
        gap = high - low - 1
        if gap <= 0:
            continue
        passes = []
        for start, towards in ((low, high), (high, low)):
            def report(count: int, _: int, offset: int = done, gap: int = gap) -> None:
                if progress is not None:  # a pass's first slice is its key slice, not segmented
                    progress(offset + min(max(count - 1, 0), gap), total)

            passes.append(_pass(predictor, run, start, keys[start], towards, report, cancel))
            done += gap
        near, far = signed_distance(keys[low]), signed_distance(keys[high])
        for index in range(low + 1, high):
            weight = (high - index) / (high - low)  # the lower key slice's weight
            reached = [(result, w) for result, w in zip(passes, (weight, 1.0 - weight))
                       if result.start <= index <= result.stop]
            if not reached:  # both passes ended before this slice: the shape between the key slices
                masks[index] = weight * near + (1.0 - weight) * far > 0
                continue
            vote = sum(w * result.masks[index] for result, w in reached) / sum(w for _, w in reached)
            masks[index] = vote > 0.5  # where the passes disagree, the nearer key slice decides
            scores[index] = float(np.mean([result.scores[index] for result, _ in reached]))
    if progress is not None:
        progress(total, total)
    return PropagationResult(masks=masks, scores=scores, start=slices[0], stop=slices[-1])
