"""Propagation of one object through a stack (core, no Qt): the shared driver with a scripted stepper, and SAM-1
propagation with the bundled tiny-cells model.

tiny-cells was not trained with mask prompts, so these runs use box + interior points only
(``use_mask_input=False``, the default); the mask-input path is checked for plumbing.
"""

import dataclasses

import numpy as np
import pytest

from napari_sam import Predictor
from napari_sam.core.errors import SegmentationCancelled
from napari_sam.core.objects import mask_iou
from napari_sam.core.settings import PropagationSettings
from napari_sam.core.workflows import interior_points, interpolate, propagate
from napari_sam.core.workflows.propagation.driver import Segmented, prepare_run, propagate_one
from napari_sam.demo import synthetic_cells

from helpers import OnePlaneVolume, cell_point, largest_cells


def clicked_cell(tiny_cells, volume, labels, cell):
    """The middle slice of ``cell`` and the mask a click at its centre gives there."""
    middle = int(np.argmax((labels == cell).sum(axis=(1, 2))))
    tiny_cells.set_image(volume[middle])
    return middle, tiny_cells.predict(points=[cell_point(labels[middle], cell)]).best_masks()[0]


def one_click_figures(predictor, stacks, per_stack: int = 4):
    """(3D IoUs, slices run past the end) of objects propagated from one click at the centre of their widest
    slice, with the checkpoint's settings."""
    ious, overrun = [], []
    for volume, labels in stacks:
        for cell in largest_cells(labels, per_stack):
            middle, first = clicked_cell(predictor, volume, labels, cell)
            result = propagate(predictor, volume, middle, 0, first)
            truth = labels == cell
            ious.append(mask_iou(result.masks, truth))
            slices = np.nonzero(truth.any(axis=(1, 2)))[0]
            overrun.append(max(slices.min() - result.start, result.stop - slices.max(), 0))
            assert np.isnan(result.scores[: result.start]).all() and np.isnan(result.scores[result.stop + 1:]).all()
    return np.array(ious), np.array(overrun)


def test_sparse_cells_from_one_click(tiny_cells):
    stacks = [synthetic_cells((24, 200, 200), seed=seed, ndim=3) for seed in (7_700_001, 7_700_002, 7_700_003)]
    ious, overrun = one_click_figures(tiny_cells, stacks)
    assert np.median(ious) >= 0.9, ious
    assert np.mean(overrun > 2) <= 0.1, overrun


def test_densely_packed_small_nuclei_end_where_they_end(tiny_cells):
    """10-pixel nuclei in three bands of slices: where one ends, its neighbours above or below begin."""
    stacks = [synthetic_cells((24, 200, 200), 180, seed=seed, ndim=3, radius_range=(4.0, 6.0), layers=3)
              for seed in (7_700_011, 7_700_012)]
    ious, overrun = one_click_figures(tiny_cells, stacks, per_stack=6)
    assert np.median(ious) >= 0.75, ious
    assert np.mean(overrun > 2) <= 0.1, overrun


def test_the_stack_axis_can_be_any_axis(tiny_cells):
    """A time-lapse stored as (y, t, x), or any order, propagates along its ``axis`` like a z-stack."""
    volume, labels = synthetic_cells((20, 160, 160), seed=920_004, ndim=3)
    cell = largest_cells(labels, 1)[0]
    middle, first = clicked_cell(tiny_cells, volume, labels, cell)
    along_z = propagate(tiny_cells, volume, middle, 0, first, use_mask_input=False)
    assert along_z.stop > along_z.start
    along_t = propagate(tiny_cells, np.moveaxis(volume, 0, 1), middle, 1, first, use_mask_input=False)
    assert np.array_equal(along_t.masks, along_z.masks)
    assert np.array_equal(along_t.scores, along_z.scores, equal_nan=True)


def test_progress_cancel_and_bad_input(tiny_cells):
    volume, labels = synthetic_cells((12, 128, 128), seed=920_005, ndim=3)
    cell = largest_cells(labels, 1)[0]
    middle, first = clicked_cell(tiny_cells, volume, labels, cell)
    calls = []
    propagate(tiny_cells, volume, middle, 0, first, use_mask_input=False, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (12, 12) and all(t == 12 for _, t in calls)
    with pytest.raises(SegmentationCancelled):
        propagate(tiny_cells, volume, middle, 0, first, cancel=lambda: True)
    with pytest.raises(ValueError, match="outside"):
        propagate(tiny_cells, volume, 40, 0, first)
    with pytest.raises(ValueError, match="empty"):
        propagate(tiny_cells, volume, middle, 0, np.zeros_like(first))
    with pytest.raises(ValueError, match="shape"):
        propagate(tiny_cells, volume, middle, 0, first[:10])


def test_the_mask_input_path_runs(tiny_cells):
    volume, labels = synthetic_cells((10, 128, 128), seed=920_006, ndim=3)
    cell = largest_cells(labels, 1)[0]
    middle, first = clicked_cell(tiny_cells, volume, labels, cell)
    result = propagate(tiny_cells, volume, middle, 0, first, use_mask_input=True, score_threshold=0.0,
                       iou_threshold=0.0, min_area=0)
    assert result.masks.shape == volume.shape and result.masks[middle].sum() == first.sum()
    kept = result.masks[result.start:result.stop + 1].any(axis=(1, 2))
    assert kept.all()  # only an empty mask (the object ended) stops it with these thresholds


def test_an_empty_mask_ends_a_direction_whatever_the_thresholds():
    from napari_sam.core.settings import PropagationSettings
    from napari_sam.core.workflows.propagation.driver import Segmented, stops

    off = PropagationSettings(score_threshold=0.0, iou_threshold=0.0, min_area=0)
    previous, found = Segmented(np.ones((4, 4), bool), 1.0), Segmented(np.ones((4, 4), bool), 0.1)
    assert not stops(found, previous, off)
    assert stops(Segmented(np.zeros((4, 4), bool), 0.9), previous, off)


def test_interior_points_lie_deep_inside():
    mask = np.zeros((50, 80), dtype=bool)
    mask[10:40, 10:30] = True
    mask[20:30, 50:70] = True
    points = interior_points(mask, 3)
    assert len(points) == 3 and mask[tuple(points.astype(int).T)].all()
    assert len(interior_points(np.zeros((5, 5), bool))) == 0


def test_one_direction_only(tiny_cells):
    """Re-propagating from a corrected slice goes one way: the other side is left alone."""
    volume, labels = synthetic_cells((20, 160, 160), seed=920_004, ndim=3)
    cell = largest_cells(labels, 1)[0]
    middle, first = clicked_cell(tiny_cells, volume, labels, cell)
    both = propagate(tiny_cells, volume, middle, 0, first, use_mask_input=False)
    calls = []
    forward = propagate(tiny_cells, volume, middle, 0, first, use_mask_input=False, directions=(1,),
                        progress=lambda d, t: calls.append((d, t)))
    assert forward.start == middle and forward.stop == both.stop
    assert not forward.masks[:middle].any()
    assert np.array_equal(forward.masks[middle:], both.masks[middle:])
    assert calls[-1] == (20 - middle, 20 - middle)
    backward = propagate(tiny_cells, volume, middle, 0, first, use_mask_input=False, directions=(-1,))
    assert backward.stop == middle and backward.start == both.start
    with pytest.raises(ValueError, match="directions"):
        propagate(tiny_cells, volume, middle, 0, first, directions=(2,))


class Scripted:
    """A stepper that returns scripted masks and scores, and records (index, step, previous slice's index)."""

    def __init__(self, masks, scores):
        self.masks, self.scores, self.calls = masks, scores, []

    def segment(self, index, plane, step, previous):
        assert plane.shape == self.masks.shape[1:]
        self.calls.append((index, step, None if previous is None else previous[1].carry))
        return {1: Segmented(self.masks[index], float(self.scores[index]), carry=index)}


def scripted_run(masks, start, **settings):
    volume = np.zeros(masks.shape, np.uint8)
    return prepare_run(volume, start, 0, settings=PropagationSettings(**settings))


@pytest.mark.parametrize("rule", ["score", "overlap", "area"])
def test_the_driver_stops_each_direction_at_the_first_failing_slice(rule):
    """Both models share these rules: forward first, then backward from the start slice; each direction keeps the
    slices before the first one that fails and segments none beyond it; each slice is compared with the last one
    kept in its direction."""
    masks = np.zeros((10, 12, 12), bool)
    masks[:, 2:8, 2:8] = True  # 36 pixels
    scores = np.full(10, 0.9)
    for bad in (7, 1):
        if rule == "score":
            scores[bad] = 0.4
        elif rule == "overlap":
            masks[bad] = False
            masks[bad, 6:12, 6:12] = True  # IoU 4 / 68 with the others
        else:
            masks[bad, 2:8, 3:8] = False  # 6 pixels
    limits = dict(score_threshold=0.5 if rule == "score" else 0.0, iou_threshold=0.3 if rule == "overlap" else 0.0,
                  min_area=10 if rule == "area" else 0)
    stepper, progress, kept = Scripted(masks, scores), [], []
    result = propagate_one(stepper, scripted_run(masks, 4, **limits), progress=lambda d, t: progress.append((d, t)),
                           on_slice=lambda i, m, s: kept.append(i))
    assert stepper.calls == [(4, 0, None), (5, 1, 4), (6, 1, 5), (7, 1, 6), (3, -1, 4), (2, -1, 3), (1, -1, 2)]
    assert (result.start, result.stop) == (2, 6) and kept == [4, 5, 6, 3, 2]
    assert progress == [(d, 10) for d in range(1, 8)] + [(10, 10)]
    assert np.array_equal(result.masks[2:7], masks[2:7]) and not result.masks[[0, 1, 7, 8, 9]].any()
    assert np.isnan(result.scores[[0, 1, 7, 8, 9]]).all() and np.allclose(result.scores[2:7], 0.9)


def squares(sides, centres=None, size=24):
    masks = np.zeros((len(sides), size, size), bool)
    for index, side in enumerate(sides):
        row, col = (10, 10) if centres is None else centres[index]
        masks[index, row - side // 2: row - side // 2 + side, col - side // 2: col - side // 2 + side] = True
    return masks


def test_an_object_that_widens_again_after_narrowing_has_ended():
    """Sections widen to one widest slice and narrow once: widening again is a neighbour taking over."""
    masks = squares([8, 8, 7, 6, 5, 6, 8, 8])  # from slice 1 forward: 64, 49, 36, 25, then 36 > 1.3 x 25
    result = propagate_one(Scripted(masks, np.full(8, 0.9)), scripted_run(masks, 1, iou_threshold=0.0))
    assert (result.start, result.stop) == (0, 4)
    result = propagate_one(Scripted(masks, np.full(8, 0.9)), scripted_run(masks, 1, iou_threshold=0.0,
                                                                           max_regrowth=0.0))
    assert (result.start, result.stop) == (0, 7)
    growing = squares([5, 7, 9, 11, 13, 13])  # an object clicked off its widest slice widens first: not a stop
    result = propagate_one(Scripted(growing, np.full(6, 0.9)), scripted_run(growing, 0, iou_threshold=0.0))
    assert (result.start, result.stop) == (0, 5)


def test_a_mask_whose_centre_jumps_has_left_the_object():
    masks = squares([8] * 6, [(10, 10), (10, 10), (10, 11), (10, 13), (10, 13), (10, 13)])
    result = propagate_one(Scripted(masks, np.full(6, 0.9)), scripted_run(masks, 0, iou_threshold=0.0))
    assert result.stop == 2  # 1 pixel in 4.5 (0.22 of the radius) is fine; 2 pixels (0.44) are a jump
    result = propagate_one(Scripted(masks, np.full(6, 0.9)), scripted_run(masks, 0, iou_threshold=0.0,
                                                                           max_shift=0.0))
    assert result.stop == 5


def test_the_driver_keeps_a_small_start_slice_and_leaves_an_empty_one():
    masks = np.zeros((6, 12, 12), bool)
    masks[:, 2:8, 2:8] = True
    masks[2] = False
    masks[2, 4:6, 4:6] = True  # 4 pixels, below min_area
    stepper = Scripted(masks, np.full(6, 0.9))
    result = propagate_one(stepper, scripted_run(masks, 2, iou_threshold=0.0, min_area=10))
    assert (result.start, result.stop) == (0, 5) and result.masks[2].sum() == 4
    masks[2] = False
    stepper = Scripted(masks, np.full(6, 0.9))
    result = propagate_one(stepper, scripted_run(masks, 2, iou_threshold=0.0, min_area=10))
    assert stepper.calls == [(2, 0, None)] and (result.start, result.stop) == (2, 2)


def test_the_driver_cancels_before_a_slice():
    masks = np.ones((6, 12, 12), bool)
    stepper, asked = Scripted(masks, np.full(6, 0.9)), []
    with pytest.raises(SegmentationCancelled):
        propagate_one(stepper, scripted_run(masks, 2), cancel=lambda: asked.append(1) or len(asked) > 3)
    assert [index for index, _, _ in stepper.calls] == [2, 3, 4]


def test_reads_one_plane_at_a_time(tiny_cells):
    """Only the slices segmented are read, one plane each, once: never the whole volume (default contrast limits
    come from the start slice), along any stack axis."""
    volume, labels = synthetic_cells((12, 128, 128), seed=920_005, ndim=3)
    cell = largest_cells(labels, 1)[0]
    middle, first = clicked_cell(tiny_cells, volume, labels, cell)
    plain = propagate(tiny_cells, volume, middle, 0, first)
    order = [middle, *range(middle + 1, min(plain.stop + 2, 12)), *range(middle - 1, max(plain.start - 2, -1), -1)]
    for axis in (0, 1, -1):
        wrapped = OnePlaneVolume(np.moveaxis(volume, 0, axis), axis)
        result = propagate(tiny_cells, wrapped, middle, axis, first)
        assert wrapped.reads == order, axis
        assert np.array_equal(result.masks, plain.masks) and (result.start, result.stop) == (plain.start, plain.stop)


@pytest.mark.parametrize("arguments, message", [
    (dict(start_index=1.5), "start_index must be an integer"),
    (dict(start_index="3"), "start_index must be an integer"),
    (dict(start_index=12), "outside the 12 slices"),
    (dict(start_index=-1), "outside the 12 slices"),
    (dict(axis=1.5), "axis must be an integer"),
    (dict(axis=3), "axis 3 is out of range"),
    (dict(axis=-4), "axis -4 is out of range"),
    (dict(contrast_limits=5), "contrast_limits must be two numbers"),
    (dict(contrast_limits=(0, 1, 2)), "contrast_limits must be two numbers"),
    (dict(contrast_limits=("low", "high")), "contrast_limits must be two numbers"),
    (dict(contrast_limits=(np.nan, 1)), "finite with low < high"),
    (dict(contrast_limits=(5, 1)), "finite with low < high"),
    (dict(rgb="yes"), "rgb must be"),
    (dict(directions=1), "directions"),
    (dict(directions=()), "directions"),
    (dict(directions=(2,)), "directions"),
    (dict(settings={"score_threshold": 0.5}), "settings must be a PropagationSettings"),
    (dict(score_treshold=0.5), "Unknown PropagationSettings setting"),
    (dict(score_threshold=1.5), "score_threshold must be"),
    (dict(first_mask=np.zeros((128, 128), bool)), "first_mask is empty"),
    (dict(first_mask=np.ones((10, 128), bool)), "first_mask has shape"),
])
def test_bad_input_is_named(arguments, message):
    """Checked before any model runs."""
    volume = np.zeros((12, 128, 128), np.uint16)
    first = np.zeros((128, 128), bool)
    first[40:60, 40:60] = True
    call = dict(predictor=None, volume=volume, start_index=5, axis=0, first_mask=first) | arguments
    with pytest.raises(ValueError, match=message):
        propagate(**call)
    with pytest.raises(ValueError, match="2D image"):
        propagate(None, volume[None], 5, 1, first)  # (1, H, W) slices: another leading axis still to fix


def test_settings_and_keyword_overrides(tiny_cells):
    """Settings default to those the checkpoint recommends; keywords override single fields of the settings
    given."""
    volume, labels = synthetic_cells((12, 128, 128), seed=920_005, ndim=3)
    middle, first = clicked_cell(tiny_cells, volume, labels, largest_cells(labels, 1)[0])
    default = propagate(tiny_cells, volume, middle, 0, first)
    explicit = propagate(tiny_cells, volume, middle, 0, first, tiny_cells.recommended.propagation)
    assert np.array_equal(default.masks, explicit.masks) and default.stop > default.start
    fussy = Predictor(tiny_cells.model, tiny_cells.geometry, tiny_cells.device,
                      recommended=dataclasses.replace(tiny_cells.recommended,
                                                      propagation=PropagationSettings(min_area=10**6)))
    alone = propagate(fussy, volume, middle, 0, first)  # its recommendation stops at the start slice
    assert (alone.start, alone.stop) == (middle, middle)
    assert propagate(fussy, volume, middle, 0, first, tiny_cells.recommended.propagation).stop == default.stop
    strict = PropagationSettings(score_threshold=0.99)
    by_settings = propagate(tiny_cells, volume, middle, 0, first, settings=strict)
    by_keyword = propagate(tiny_cells, volume, middle, 0, first, score_threshold=0.99)
    assert (by_settings.start, by_settings.stop) == (by_keyword.start, by_keyword.stop) == (middle, middle)
    relaxed = propagate(tiny_cells, volume, middle, 0, first, strict, score_threshold=0.0, iou_threshold=0.0,
                        min_area=0, max_regrowth=0.0, max_shift=0.0)
    assert (relaxed.start, relaxed.stop) == (0, 11)


# --- key slices ------------------------------------------------------------------------------------------------------

def test_key_slices_at_the_top_and_bottom_fill_the_object(tiny_cells):
    ious = []
    for seed in (7_700_021, 7_700_022):
        volume, labels = synthetic_cells((24, 200, 200), seed=seed, ndim=3)
        for cell in largest_cells(labels, 4):
            truth = labels == cell
            slices = np.nonzero(truth.any(axis=(1, 2)))[0]
            top, bottom = int(slices[0]), int(slices[-1])
            result = interpolate(tiny_cells, volume, 0, {top: truth[top], bottom: truth[bottom]})
            assert (result.start, result.stop) == (top, bottom)
            assert not result.masks[:top].any() and not result.masks[bottom + 1:].any()
            assert np.array_equal(result.masks[top], truth[top]) and result.scores[top] == 1.0
            ious.append(mask_iou(result.masks, truth))
    assert np.median(ious) >= 0.85, ious


def test_key_slices_progress_cancel_and_bad_input(tiny_cells):
    volume, labels = synthetic_cells((12, 128, 128), seed=920_005, ndim=3)
    cell = largest_cells(labels, 1)[0]
    truth = labels == cell
    slices = np.nonzero(truth.any(axis=(1, 2)))[0]
    keys = {int(slices[0]): truth[slices[0]], int(slices[-1]): truth[slices[-1]]}
    calls = []
    interpolate(tiny_cells, volume, 0, keys, progress=lambda d, t: calls.append((d, t)))
    gap = int(slices[-1] - slices[0] - 1)
    assert calls[-1] == (2 * gap, 2 * gap) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    with pytest.raises(SegmentationCancelled):
        interpolate(tiny_cells, volume, 0, keys, cancel=lambda: True)
    one = dict(list(keys.items())[:1])
    bad = [(one, "two or more slices"), ({(0, 3): truth[3], 5: truth[5]}, "not one slice index along the stack axis"),
           ({3: truth[3], 40: truth[3]}, "outside the 12 slices"), ({3: truth[3], 5: truth[5][:10]}, "shape"),
           ({3: truth[3], 5: np.zeros_like(truth[5])}, "empty"), ([truth[3], truth[5]], "dict")]
    for given, message in bad:
        with pytest.raises(ValueError, match=message):
            interpolate(tiny_cells, volume, 0, given)


def test_a_mask_one_pixel_wide_is_propagated(tiny_cells):
    """Its box has no width, so the box prompt is widened by half a pixel each way (this raised "Degenerate box")."""
    volume, _ = synthetic_cells((8, 128, 128), seed=920_007, ndim=3)
    first = np.zeros((128, 128), bool)
    first[40:60, 64] = True
    result = propagate(tiny_cells, volume, 4, 0, first, score_threshold=0.0, iou_threshold=0.0, min_area=0,
                       max_regrowth=0.0, max_shift=0.0)
    assert result.masks[4].sum() == 20 and result.start < 4 < result.stop
