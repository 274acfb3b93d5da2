"""Linking segment everything's per-plane objects into 3D objects (core, numpy only)."""

import numpy as np
import pytest
import zarr

from napari_sam.core.workflows import link_planes
from napari_sam.core.workflows.linking import matched
from napari_sam.testing.synthetic_microscopy import synthetic_stack


def per_plane_ids(labels: np.ndarray) -> np.ndarray:
    """Labels whose ids are new on every plane (as segment everything paints a stack plane by plane)."""
    out, next_id = np.zeros(labels.shape, np.uint32), 1
    for index, plane in enumerate(labels):
        for object_id in np.unique(plane)[1:]:
            out[index][plane == object_id] = next_id
            next_id += 1
    return out


def test_each_object_of_a_stack_gets_one_id_through_its_planes():
    _, truth, _ = synthetic_stack((16, 256, 256), "nuclei", seed=7_200_001, dtype=np.uint8)
    labels = per_plane_ids(truth)
    mapping = link_planes(labels)
    assert len(set(mapping.values())) == len(np.unique(truth)) - 1  # sparse objects: one id each, none merged
    for object_id in np.unique(truth)[1:]:
        assert len(np.unique(labels[truth == object_id])) == 1
    assert sorted(set(mapping.values())) == list(range(1, len(set(mapping.values())) + 1))


def test_a_plane_that_misses_an_object_is_bridged_within_the_gap():
    labels = np.zeros((5, 20, 20), np.uint32)
    labels[0, 5:15, 5:15], labels[1, 5:15, 5:15], labels[3, 6:15, 5:15], labels[4, 6:15, 6:15] = 1, 2, 3, 4
    bridged = labels.copy()
    link_planes(bridged, gap=1)
    assert set(np.unique(bridged)) == {0, 1}
    link_planes(labels, gap=0)
    assert set(np.unique(labels)) == {0, 1, 2}  # without bridging, the object starts anew after the gap


def test_each_object_takes_one_partner_the_best_overlapping():
    previous = np.zeros((10, 20), np.uint32)
    previous[:, :10], previous[:, 10:] = 1, 2
    current = np.zeros((10, 20), np.uint32)
    current[:, 1:11], current[:, 12:] = 5, 6  # 5 overlaps 1 (9 columns of 10) and 2 (1); 6 overlaps 2 only
    assert matched(previous, current, 0.5) == {5: 1, 6: 2}
    current[:] = 0
    current[:, 3:17] = 7  # shares 6 columns with 1 and 7 with 2, over half of each: the better IoU wins
    current[:, 9] = 0
    assert matched(previous, current, 0.5) == {7: 2}
    current[:] = 0
    current[:, 6:14] = 8  # shares half of itself with each
    assert matched(previous, current, 0.6) == {}


def test_zarr_labels_are_linked_in_place(tmp_path):
    data = np.zeros((3, 10, 10), np.uint32)
    data[0, 2:8, 2:8], data[1, 2:8, 2:8], data[2, 2:7, 2:7] = 4, 9, 12
    labels = zarr.create_array(tmp_path / "labels.zarr", shape=data.shape, chunks=(1, 10, 10), dtype="uint32")
    labels[:] = data
    calls = []
    assert link_planes(labels, progress=lambda d, t: calls.append((d, t))) == {4: 1, 9: 1, 12: 1}
    assert set(np.unique(labels[:])) == {0, 1} and calls == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("labels, kwargs, message", [
    (np.zeros((10, 10), np.uint32), {}, "stack of planes"),
    (np.ones((2, 4, 4), np.uint32), {}, r"ids \[1\] lie on plane 1 and on an earlier plane"),
    (np.zeros((2, 4, 4), np.uint32), {"min_overlap": 0}, "min_overlap"),
    (np.zeros((2, 4, 4), np.uint32), {"gap": -1}, "gap"),
])
def test_bad_input_is_named(labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        link_planes(labels, **kwargs)
