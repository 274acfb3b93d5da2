"""Many objects through a stack at once (core, no Qt): every object of a labels plane in one run, each slice
encoded once, no pixel given twice, each object with its own stop rules and bounds."""

import numpy as np
import pytest

from napari_sam import Predictor, propagate, propagate_objects
from napari_sam.core.objects import mask_iou
from napari_sam.core.settings import PropagationSettings
from napari_sam.core.workflows.propagation.driver import Segmented, claimed_once, prepare_run, propagate_many
from napari_sam.demo import synthetic_cells

from helpers import count_encoder_runs


@pytest.fixture(scope="module")
def dense_stack():
    """A 32-slice densely packed stack, its labels, and the labels of its middle slice's 50 largest objects."""
    volume, labels = synthetic_cells((32, 256, 256), 70, seed=7_300_001, ndim=3, radius_range=(6.0, 10.0), layers=2)
    start = 12
    plane = labels[start]
    ids, areas = np.unique(plane[plane > 0], return_counts=True)
    chosen = ids[np.argsort(-areas)[:50]]
    return volume, labels, start, np.where(np.isin(plane, chosen), plane, 0).astype(np.uint32)


def test_fifty_objects_go_through_32_slices_in_one_run_one_encoder_run_per_slice(dense_stack):
    volume, labels, start, plane = dense_stack
    assert len(np.unique(plane)) - 1 == 50
    predictor = Predictor.from_pretrained("tiny-cells", device="cpu")  # its own cache: every encoder run counts
    runs, progress = count_encoder_runs(predictor), []
    result = propagate_objects(predictor, volume, start, 0, plane, progress=lambda d, t: progress.append((d, t)))
    segmented = len(progress) - 1  # the last call is (total, total); the start slice is the user's labels
    assert len(runs) == segmented - 1 <= 31  # one encoder run per slice, for all the objects still followed
    assert result.labels.shape == volume.shape and result.labels.dtype == np.uint32
    assert np.array_equal(result.labels[start], plane)  # the start slice is the user's labels
    assert set(np.unique(result.labels)) - {0} <= set(np.unique(plane)) - {0}
    ious = []
    for object_id, (first, last) in result.extents.items():
        found = result.labels == object_id
        assert found[first].any() and found[last].any() and not found[:first].any() and not found[last + 1:].any()
        assert np.isnan(result.scores[object_id][:first]).all()
        truth_id = np.bincount(labels[start][plane == object_id]).argmax()
        ious.append(mask_iou(found, labels == truth_id))
    assert np.median(ious) >= 0.8, sorted(ious)


def test_objects_together_match_objects_one_by_one(tiny_cells, dense_stack):
    """Decoding the objects together gives each what propagating it alone on the whole image gives, give or take the
    pixels a neighbour holds (alone, a small object is decoded in a window magnified around it by default)."""
    volume, labels, start, plane = dense_stack
    ids = np.unique(plane)[1:][:6]
    together = propagate_objects(tiny_cells, volume, start, 0, plane, ids=ids)
    agreement = [mask_iou(together.labels == object_id,
                          propagate(tiny_cells, volume, start, 0, plane == object_id, zoom=0).masks)
                 for object_id in ids]
    assert np.median(agreement) >= 0.85 and min(agreement) >= 0.6, agreement


class Overlapping:
    """Two scripted objects whose masks overlap on every slice after the start."""

    def __init__(self, masks: dict[int, np.ndarray], scores: dict[int, float]):
        self.masks, self.scores = masks, scores

    def segment(self, index, plane, step, previous):
        ids = self.masks if previous is None else previous
        return {i: Segmented(self.masks[i][index], self.scores[i]) for i in ids}


def test_a_contested_pixel_goes_to_its_previous_owner_else_to_the_higher_score():
    found = {1: Segmented(np.array([[1, 1, 1, 0]], bool), 0.5), 2: Segmented(np.array([[0, 1, 1, 1]], bool), 0.9)}
    previous = {1: Segmented(np.array([[1, 1, 0, 0]], bool), 1.0), 2: Segmented(np.array([[0, 0, 0, 1]], bool), 1.0)}
    kept = claimed_once(found, previous)
    assert kept[1].mask.tolist() == [[True, True, False, False]]  # pixel 1: held by 1 before; pixel 2: 2 scores more
    assert kept[2].mask.tolist() == [[False, False, True, True]]
    both_held = {1: Segmented(np.array([[1, 1, 1, 0]], bool), 1.0), 2: Segmented(np.array([[0, 1, 1, 1]], bool), 1.0)}
    assert claimed_once(found, both_held)[2].mask.tolist() == [[False, True, True, True]]
    swallowed = {1: Segmented(np.array([[0, 1, 0, 0]], bool), 0.1), 2: found[2]}
    assert list(claimed_once(swallowed, {})) == [2]  # an object left without pixels is dropped


def test_many_objects_driven_together_never_share_a_pixel_and_stop_on_their_own():
    masks = {1: np.zeros((6, 8, 8), bool), 2: np.zeros((6, 8, 8), bool)}
    masks[1][:, 1:5, 1:5] = True
    masks[2][:, 3:7, 3:7] = True
    masks[2][2:4] = False  # going down from slice 4, object 2 ends at once
    volume = np.zeros((6, 8, 8), np.uint8)
    run = prepare_run(volume, 4, 0, settings=PropagationSettings(score_threshold=0.0, iou_threshold=0.0, min_area=1))
    result = propagate_many(Overlapping(masks, {1: 0.5, 2: 0.9}), run, [1, 2], bounds={1: (1, None)})
    assert result.extents == {1: (1, 5), 2: (4, 5)}
    assert not (result.labels[0] == 1).any()  # object 1's bound
    assert (result.labels[5][3:5, 3:5] == 2).all()  # contested, and held by both before: the higher score
    assert (result.labels[3] == 1).sum() == 16


@pytest.mark.parametrize("plane, ids, bounds, message", [
    (np.zeros((10, 10), np.uint32), None, None, "shape"),
    (np.zeros((64, 64), np.float32), None, None, "integer labels"),
    (np.zeros((64, 64), np.uint32), None, None, "no object"),
    ("one", [7], None, r"objects \[7\] are not on"),
    ("one", None, {1: (5, None)}, "leave out the start slice 3"),
    ("one", None, {1: (0, 99)}, "within the 8 slices"),
    ("one", None, {2: (0, 4)}, r"bounds name objects \[2\]"),
])
def test_bad_input_is_named(tiny_cells, plane, ids, bounds, message):
    volume = np.zeros((8, 64, 64), np.uint8)
    if isinstance(plane, str):
        plane = np.zeros((64, 64), np.uint32)
        plane[20:30, 20:30] = 1
    with pytest.raises(ValueError, match=message):
        propagate_objects(tiny_cells, volume, 3, 0, plane, ids=ids, bounds=bounds)


def test_a_bound_ends_one_object_where_the_user_says(tiny_cells, dense_stack):
    volume, labels, start, plane = dense_stack
    object_id = int(np.unique(plane)[1])
    free = propagate(tiny_cells, volume, start, 0, plane == object_id)
    assert free.stop > start
    bounded = propagate(tiny_cells, volume, start, 0, plane == object_id, bounds=(None, start))
    assert (bounded.start, bounded.stop) == (free.start, start) and not bounded.masks[start + 1:].any()
    with pytest.raises(ValueError, match="leave out the start slice"):
        propagate(tiny_cells, volume, start, 0, plane == object_id, bounds=(start + 1, None))
