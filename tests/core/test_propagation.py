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
from napari_sam.core.settings import PropagationSettings
from napari_sam.core.workflows.propagation import interior_points, propagate
from napari_sam.core.workflows.propagation.driver import Segmented, drive, prepare_run
from napari_sam.demo import synthetic_cells

from helpers import OnePlaneVolume, cell_point, largest_cells


def clicked_cell(tiny_cells, volume, labels, cell):
    """The middle slice of ``cell`` and the mask a click at its centre gives there."""
    middle = int(np.argmax((labels == cell).sum(axis=(1, 2))))
    tiny_cells.set_image(volume[middle])
    return middle, tiny_cells.predict(points=[cell_point(labels[middle], cell)]).best_masks()[0]


def test_a_click_and_propagate_recover_the_3d_cell(tiny_cells):
    ious, overshoot = [], []
    for seed in (920_001, 920_002, 920_003):
        volume, labels = synthetic_cells((32, 200, 200), seed=seed, ndim=3)
        for cell in largest_cells(labels, 3):
            middle, first = clicked_cell(tiny_cells, volume, labels, cell)
            result = propagate(tiny_cells, volume, middle, 0, first)  # the default settings
            truth = labels == cell
            ious.append((result.masks & truth).sum() / (result.masks | truth).sum())
            slices = np.nonzero(truth.any(axis=(1, 2)))[0]
            overshoot.append(max(slices.min() - result.start, result.stop - slices.max(), 0))
            assert np.isnan(result.scores[: result.start]).all() and np.isnan(result.scores[result.stop + 1:]).all()
    assert np.median(ious) >= 0.85, ious
    assert max(overshoot) <= 2, overshoot


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
        self.calls.append((index, step, None if previous is None else previous.carry))
        return Segmented(self.masks[index], float(self.scores[index]), carry=index)


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
    result = drive(stepper, scripted_run(masks, 4, **limits), progress=lambda d, t: progress.append((d, t)),
                   on_slice=lambda i, m, s: kept.append(i))
    assert stepper.calls == [(4, 0, None), (5, 1, 4), (6, 1, 5), (7, 1, 6), (3, -1, 4), (2, -1, 3), (1, -1, 2)]
    assert (result.start, result.stop) == (2, 6) and kept == [4, 5, 6, 3, 2]
    assert progress == [(d, 10) for d in range(1, 8)] + [(10, 10)]
    assert np.array_equal(result.masks[2:7], masks[2:7]) and not result.masks[[0, 1, 7, 8, 9]].any()
    assert np.isnan(result.scores[[0, 1, 7, 8, 9]]).all() and np.allclose(result.scores[2:7], 0.9)


def test_the_driver_keeps_a_small_start_slice_and_leaves_an_empty_one():
    masks = np.zeros((6, 12, 12), bool)
    masks[:, 2:8, 2:8] = True
    masks[2] = False
    masks[2, 4:6, 4:6] = True  # 4 pixels, below min_area
    stepper = Scripted(masks, np.full(6, 0.9))
    result = drive(stepper, scripted_run(masks, 2, iou_threshold=0.0, min_area=10))
    assert (result.start, result.stop) == (0, 5) and result.masks[2].sum() == 4
    masks[2] = False
    stepper = Scripted(masks, np.full(6, 0.9))
    result = drive(stepper, scripted_run(masks, 2, iou_threshold=0.0, min_area=10))
    assert stepper.calls == [(2, 0, None)] and (result.start, result.stop) == (2, 2)


def test_the_driver_cancels_before_a_slice():
    masks = np.ones((6, 12, 12), bool)
    stepper, asked = Scripted(masks, np.full(6, 0.9)), []
    with pytest.raises(SegmentationCancelled):
        drive(stepper, scripted_run(masks, 2), cancel=lambda: asked.append(1) or len(asked) > 3)
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
    assert propagate(fussy, volume, middle, 0, first, PropagationSettings()).stop == default.stop
    strict = PropagationSettings(score_threshold=0.99)
    by_settings = propagate(tiny_cells, volume, middle, 0, first, settings=strict)
    by_keyword = propagate(tiny_cells, volume, middle, 0, first, score_threshold=0.99)
    assert (by_settings.start, by_settings.stop) == (by_keyword.start, by_keyword.stop) == (middle, middle)
    relaxed = propagate(tiny_cells, volume, middle, 0, first, strict, score_threshold=0.0, iou_threshold=0.0,
                        min_area=0)
    assert (relaxed.start, relaxed.stop) == (0, 11)
