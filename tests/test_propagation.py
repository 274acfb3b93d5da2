"""Propagation of one object through a stack (core, no Qt), with the bundled tiny-cells model.

tiny-cells was not trained with mask prompts, so these runs use box + interior points only
(``use_mask_input=False``); the mask-input path is checked for plumbing.
"""

import numpy as np
import pytest

from napari_sam import Predictor
from napari_sam.core.automatic_mask_generator import SegmentationCancelled
from napari_sam.core.propagation import interior_points, propagate
from napari_sam.demo import synthetic_cells


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_pretrained("tiny-cells", device="cpu")


def clicked_cell(predictor, volume, labels, cell):
    """The middle slice of ``cell`` and the mask a click at its centre gives there."""
    middle = int(np.argmax((labels == cell).sum(axis=(1, 2))))
    rows, cols = np.nonzero(labels[middle] == cell)
    nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
    predictor.set_image(volume[middle])
    return middle, predictor.predict(points=[[rows[nearest], cols[nearest]]]).best_masks()[0]


def largest_cells(labels, count):
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.argsort(-sizes)[:count]


def test_a_click_and_propagate_recover_the_3d_cell(predictor):
    ious, overshoot = [], []
    for seed in (920_001, 920_002, 920_003):
        volume, labels = synthetic_cells((32, 200, 200), seed=seed, ndim=3)
        for cell in largest_cells(labels, 3):
            middle, first = clicked_cell(predictor, volume, labels, cell)
            result = propagate(predictor, volume, middle, 0, first, use_mask_input=False)
            truth = labels == cell
            ious.append((result.masks & truth).sum() / (result.masks | truth).sum())
            slices = np.nonzero(truth.any(axis=(1, 2)))[0]
            overshoot.append(max(slices.min() - result.start, result.stop - slices.max(), 0))
            assert np.isnan(result.scores[: result.start]).all() and np.isnan(result.scores[result.stop + 1:]).all()
    assert np.median(ious) >= 0.75, ious
    assert max(overshoot) <= 2, overshoot


def test_the_stack_axis_can_be_any_axis(predictor):
    """A time-lapse stored as (y, t, x), or any order, propagates along its ``axis`` like a z-stack."""
    volume, labels = synthetic_cells((20, 160, 160), seed=920_004, ndim=3)
    cell = largest_cells(labels, 1)[0]
    middle, first = clicked_cell(predictor, volume, labels, cell)
    along_z = propagate(predictor, volume, middle, 0, first, use_mask_input=False)
    assert along_z.stop > along_z.start
    along_t = propagate(predictor, np.moveaxis(volume, 0, 1), middle, 1, first, use_mask_input=False)
    assert np.array_equal(along_t.masks, along_z.masks)
    assert np.array_equal(along_t.scores, along_z.scores, equal_nan=True)


def test_progress_cancel_and_bad_input(predictor):
    volume, labels = synthetic_cells((12, 128, 128), seed=920_005, ndim=3)
    cell = largest_cells(labels, 1)[0]
    middle, first = clicked_cell(predictor, volume, labels, cell)
    calls = []
    propagate(predictor, volume, middle, 0, first, use_mask_input=False, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (12, 12) and all(t == 12 for _, t in calls)
    with pytest.raises(SegmentationCancelled):
        propagate(predictor, volume, middle, 0, first, cancel=lambda: True)
    with pytest.raises(ValueError, match="outside"):
        propagate(predictor, volume, 40, 0, first)
    with pytest.raises(ValueError, match="empty"):
        propagate(predictor, volume, middle, 0, np.zeros_like(first))
    with pytest.raises(ValueError, match="shape"):
        propagate(predictor, volume, middle, 0, first[:10])


def test_the_mask_input_path_runs(predictor):
    volume, labels = synthetic_cells((10, 128, 128), seed=920_006, ndim=3)
    cell = largest_cells(labels, 1)[0]
    middle, first = clicked_cell(predictor, volume, labels, cell)
    result = propagate(predictor, volume, middle, 0, first, use_mask_input=True, score_threshold=-10,
                       iou_threshold=0.0, min_area=0)
    assert result.masks.shape == volume.shape and result.masks[middle].sum() == first.sum()
    assert result.start == 0 and result.stop == 9  # nothing stops it with these thresholds


def test_interior_points_lie_deep_inside():
    mask = np.zeros((50, 80), dtype=bool)
    mask[10:40, 10:30] = True
    mask[20:30, 50:70] = True
    points = interior_points(mask, 3)
    assert len(points) == 3 and mask[tuple(points.astype(int).T)].all()
    assert len(interior_points(np.zeros((5, 5), bool))) == 0


def test_one_direction_only(predictor):
    """Re-propagating from a corrected slice goes one way: the other side is left alone."""
    volume, labels = synthetic_cells((20, 160, 160), seed=920_004, ndim=3)
    cell = largest_cells(labels, 1)[0]
    middle, first = clicked_cell(predictor, volume, labels, cell)
    both = propagate(predictor, volume, middle, 0, first, use_mask_input=False)
    calls = []
    forward = propagate(predictor, volume, middle, 0, first, use_mask_input=False, directions=(1,),
                        progress=lambda d, t: calls.append((d, t)))
    assert forward.start == middle and forward.stop == both.stop
    assert not forward.masks[:middle].any()
    assert np.array_equal(forward.masks[middle:], both.masks[middle:])
    assert calls[-1] == (20 - middle, 20 - middle)
    backward = propagate(predictor, volume, middle, 0, first, use_mask_input=False, directions=(-1,))
    assert backward.stop == middle and backward.start == both.start
    with pytest.raises(ValueError, match="directions"):
        propagate(predictor, volume, middle, 0, first, directions=(2,))
