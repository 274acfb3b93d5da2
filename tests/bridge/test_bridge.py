"""The bridge between napari layers and the core: transforms, prompt reading, undoable label writes.

Uses real napari layers (no viewer needed) and checks against napari's own transforms and rasterisation.
"""

import numpy as np
import pytest
from napari.layers import Image, Labels, Points, Shapes

from napari_sam.bridge.labels_writer import commit_masks
from napari_sam.bridge.layer_prompts import group_objects, read_prompts
from napari_sam.bridge.transforms import apply, data_to_world, to_target_data

TRANSFORMS = {
    "none": {},
    "scale_translate": {"scale": (2.0, 0.5), "translate": (10.0, -5.0)},
    "rotate_shear": {"scale": (1.5, 1.0), "rotate": 30.0, "shear": [0.3]},
    "affine": {"affine": np.array([[0.9, 0.2, 3.0], [-0.1, 1.1, -7.0], [0.0, 0.0, 1.0]])},
}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_matrix_matches_napari(name):
    layer = Image(np.zeros((20, 30)), **TRANSFORMS[name])
    matrix = data_to_world(layer)
    positions = np.random.default_rng(0).uniform(-5, 40, (10, 2))
    expected = np.array([layer.data_to_world(p) for p in positions])
    np.testing.assert_allclose(apply(matrix, positions), expected, atol=1e-9)


def test_points_map_between_layers_with_different_transforms():
    image = Image(np.zeros((50, 60)), scale=(2.0, 0.5), translate=(10.0, -5.0))
    clicks = Points(np.zeros((0, 2)), rotate=15.0)  # another transform
    data = np.array([[12.0, 30.0], [40.0, 7.5]])
    world = np.array([image.data_to_world(p) for p in data])
    clicks_data = np.array([clicks.world_to_data(w) for w in world])
    np.testing.assert_allclose(to_target_data(clicks, image, clicks_data), data, atol=1e-9)


def test_a_2d_prompt_layer_on_a_stack_takes_the_viewer_slice():
    stack = Image(np.zeros((8, 40, 40)), scale=(3.0, 1.0, 1.0))
    flat = Points(np.array([[10.0, 20.0]]))
    mapped = to_target_data(flat, stack, flat.data, world_point=(12.0, 0.0, 0.0))
    np.testing.assert_allclose(mapped, [[4.0, 10.0, 20.0]])


def test_prompts_are_read_on_the_shown_plane_only():
    stack = Image(np.zeros((6, 40, 50)), scale=(2.0, 1.0, 1.0))
    points = Points(np.array([[2.0, 10.0, 11.0], [2.2, 20.0, 21.0], [3.0, 5.0, 5.0]]), scale=(2.0, 1.0, 1.0),
                    features={"positive": [True, False, True]})
    shapes = Shapes([np.array([[2, 5, 5], [2, 5, 15], [2, 25, 15], [2, 25, 5]])], shape_type="rectangle",
                    scale=(2.0, 1.0, 1.0))
    prompts = read_prompts(stack, (2,), (40, 50), points, shapes)
    np.testing.assert_allclose(prompts.points, [[10, 11], [20, 21]])
    assert prompts.labels.tolist() == [1, 0]
    np.testing.assert_allclose(prompts.boxes, [[5, 5, 25, 15]])
    assert read_prompts(stack, (4,), (40, 50), points, shapes).empty


def test_polygons_and_ellipses_rasterise_like_napari():
    shape = (60, 70)
    polygon = np.array([[5, 5], [10, 50], [40, 60], [55, 20], [30, 10]], dtype=float)
    ellipse = np.array([[10, 10], [10, 40], [30, 40], [30, 10]], dtype=float)
    layer = Shapes([polygon, ellipse], shape_type=["polygon", "ellipse"])
    expected = layer.to_masks(mask_shape=shape)
    prompts = read_prompts(Image(np.zeros(shape)), (), shape, shapes_layer=layer)
    for ours, theirs in zip(prompts.masks, expected):  # ours are cropped to their boxes
        assert (ours.full(shape) != theirs).sum() <= 0.02 * theirs.sum()  # boundary pixels may differ
    np.testing.assert_allclose(prompts.boxes[1], [10, 10, 30, 40])


def test_points_join_the_box_that_holds_them():
    image = Image(np.zeros((50, 50)))
    points = Points(np.array([[10.0, 10.0], [40.0, 40.0], [25.0, 2.0]]))
    shapes = Shapes([np.array([[5, 5], [20, 20]]), np.array([[30, 30], [45, 45]])], shape_type="rectangle")
    objects = group_objects(read_prompts(image, (), (50, 50), points, shapes))
    assert [len(o.points) for o in objects] == [1, 1, 1]
    assert objects[2].box is None  # the loose point is an object of its own


def test_commit_writes_fresh_ids_in_one_undo_step():
    image = Image(np.zeros((30, 40)))
    labels = Labels(np.zeros((30, 40), dtype=np.uint32))
    labels.data[0, 0] = 3
    before = labels.data.copy()
    masks = np.zeros((2, 30, 40), dtype=bool)
    masks[0, 5:10, 5:10] = True
    masks[1, 0:2, 0:2] = True  # overlaps the existing label 3
    assert commit_masks(labels, image, masks) == [4, 5]
    assert (labels.data[5:10, 5:10] == 4).all() and labels.data[0, 0] == 3 and labels.data[1, 1] == 5
    labels.undo()
    assert np.array_equal(labels.data, before)
    labels.redo()
    assert labels.data[5, 5] == 4 and labels.data[1, 1] == 5



@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_replacing_an_object_within_its_region(scale):
    """A refined object is cleared only within the region given (its box on the plane, in image pixels), on a
    labels layer of the image's grid or a finer one, and rewritten from a windowed mask; one undo step."""
    from napari_sam.bridge.labels_writer import replace_object

    image = Image(np.zeros((20, 20)), scale=(scale, scale))
    factor = int(scale)
    labels = Labels(np.zeros((20 * factor, 20 * factor), dtype=np.uint16))
    labels.data[2 * factor: 6 * factor, 2 * factor: 6 * factor] = 7  # the object being refined
    labels.data[15 * factor:, 15 * factor:] = 7  # another part of id 7, outside the region
    before = labels.data.copy()
    refined = np.zeros((3, 3), dtype=bool)
    refined[1:, 1:] = True  # image pixels 3..4 of a window at (2, 2)
    assert replace_object(labels, image, 7, [((), refined, (2, 2))], [()], region=(2, 2, 6, 6))
    on_image = labels.data[::factor, ::factor]
    assert (on_image[3:5, 3:5] == 7).all() and on_image[2, 2] == 0 and on_image[5, 5] == 0
    assert (labels.data[15 * factor:, 15 * factor:] == 7).all()
    labels.undo()
    assert np.array_equal(labels.data, before)


def test_commit_into_a_labels_layer_on_another_grid():
    image = Image(np.zeros((20, 20)), scale=(2.0, 2.0))
    labels = Labels(np.zeros((40, 40), dtype=np.uint8))  # world pixels: twice as fine
    mask = np.zeros((20, 20), dtype=bool)
    mask[4:6, 4:6] = True
    (new,) = commit_masks(labels, image, mask[None])
    expected = np.zeros((40, 40), dtype=bool)
    expected[7:11, 7:11] = True  # image pixels 4..5 span world 7..11 (pixel centres at 8 and 10)
    assert np.array_equal(labels.data == new, expected)


def test_commit_on_a_stack_plane():
    image = Image(np.zeros((5, 10, 10)))
    labels = Labels(np.zeros((5, 10, 10), dtype=np.int32))
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:4, 3:5] = True
    (new,) = commit_masks(labels, image, mask[None], plane_index=(3,))
    assert set(np.nonzero(labels.data == new)[0]) == {3}


def test_a_commit_that_cannot_be_written_whole_writes_nothing():
    """A labels layer smaller than the image; the second of two objects lies outside it. The commit raises, writes
    nothing, and leaves the undo history as it was: the next commit is one undo step of its own."""
    from napari_sam.bridge.labels_writer import commit_masks

    image = Image(np.zeros((40, 40)))
    labels = Labels(np.zeros((30, 30), dtype=np.uint32))
    masks = np.zeros((2, 40, 40), dtype=bool)
    masks[0, 5:10, 5:10] = True
    masks[1, 32:38, 32:38] = True  # outside the 30 x 30 labels
    with pytest.raises(ValueError, match="outside the labels layer"):
        commit_masks(labels, image, masks)
    assert not labels.data.any()
    (first,) = commit_masks(labels, image, masks[:1])
    after_first = labels.data.copy()
    second = np.zeros((40, 40), dtype=bool)
    second[20:25, 20:25] = True
    commit_masks(labels, image, second[None])
    labels.undo()
    assert np.array_equal(labels.data, after_first)
    labels.undo()
    assert not labels.data.any()


def test_a_full_uint8_layer_says_so_and_writes_nothing():
    from napari_sam.bridge.labels_writer import commit_masks
    from napari_sam.core.errors import LabelsFullError

    image = Image(np.zeros((20, 20)))
    labels = Labels(np.zeros((20, 20), dtype=np.uint8))
    labels.data[0, 0] = 254
    masks = np.zeros((2, 20, 20), dtype=bool)
    masks[0, 5:8, 5:8] = True
    masks[1, 10:14, 10:14] = True
    before = labels.data.copy()
    with pytest.raises(LabelsFullError, match="uint8.*256"):
        commit_masks(labels, image, masks)  # ids 255 and 256: the second does not fit
    assert np.array_equal(labels.data, before)
    assert commit_masks(labels, image, masks[:1]) == [255]


def test_overlapping_masks_of_one_commit_keep_the_first_unless_overwrite():
    from napari_sam.bridge.labels_writer import commit_masks

    image = Image(np.zeros((20, 20)))
    masks = np.zeros((2, 20, 20), dtype=bool)
    masks[0, 2:10, 2:10] = True
    masks[1, 6:14, 6:14] = True
    labels = Labels(np.zeros((20, 20), dtype=np.uint16))
    assert commit_masks(labels, image, masks) == [1, 2]
    assert labels.data[7, 7] == 1
    labels = Labels(np.zeros((20, 20), dtype=np.uint16))
    commit_masks(labels, image, masks, overwrite=True)
    assert labels.data[7, 7] == 2


def test_replacing_objects_of_a_plane_is_one_undo_step():
    from napari_sam.bridge.labels_writer import replace_plane_objects

    image = Image(np.zeros((3, 20, 20)))
    data = np.zeros((3, 20, 20), dtype=np.int32)
    data[1, 2:6, 2:6] = 4
    data[1, 10:15, 10:15] = 9
    data[2, 2:6, 2:6] = 4  # another plane: untouched
    labels = Labels(data.copy())
    new4 = np.zeros((20, 20), dtype=bool)
    new4[3:8, 3:8] = True
    new9 = np.zeros((20, 20), dtype=bool)
    new9[11:13, 11:13] = True
    new_plane = np.where(new4, 4, np.where(new9, 9, 0))
    assert replace_plane_objects(labels, image, [((1,), new_plane, [4, 9])])
    assert np.array_equal(labels.data[1] == 4, new4) and np.array_equal(labels.data[1] == 9, new9)
    assert np.array_equal(labels.data[2], data[2])
    labels.undo()
    assert np.array_equal(labels.data, data)


def test_labels_are_read_back_onto_the_image_plane_on_any_grid():
    from napari_sam.bridge.labels_grid import labels_on_plane, object_mask

    image = Image(np.zeros((4, 20, 20)), scale=(1.0, 2.0, 2.0))
    labels = Labels(np.zeros((4, 40, 40), dtype=np.uint16))  # twice as fine in y and x
    labels.data[2, 8:12, 8:12] = 5  # world 8..11: image pixels 4 and 5
    plane = labels_on_plane(labels, image, (2,), (20, 20))
    assert plane.shape == (20, 20) and set(np.unique(plane)) == {0, 5}
    assert np.array_equal(np.argwhere(plane == 5).min(axis=0), [4, 4])
    assert np.array_equal(np.argwhere(plane == 5).max(axis=0), [5, 5])
    assert object_mask(labels, image, (2,), (20, 20), 5).sum() == 4
    assert not object_mask(labels, image, (1,), (20, 20), 5).any()


def test_scribbles_become_points_along_them_with_their_polarity():
    stack = Image(np.zeros((4, 60, 80)))
    positive = np.array([[1, 10, 10], [1, 10, 40], [1, 30, 40]], dtype=float)  # a path 30 + 20 px long
    negative = np.array([[1, 50, 5], [1, 50, 20]], dtype=float)  # a line, 15 px
    elsewhere = np.array([[2, 5, 5], [2, 5, 50]], dtype=float)
    shapes = Shapes([positive, negative, elsewhere], shape_type=["path", "line", "path"],
                    features={"positive": [True, False, True]})
    prompts = read_prompts(stack, (1,), (60, 80), shapes_layer=shapes)
    assert len(prompts.boxes) == 0  # scribbles are no boxes
    assert prompts.labels.tolist() == [1, 1, 1, 1, 0]  # 50 px: 4 points; 15 px: 1
    np.testing.assert_allclose(prompts.points[:4], [[10, 16.25], [10, 28.75], [11.25, 40], [23.75, 40]])
    np.testing.assert_allclose(prompts.points[4], [50, 12.5])
    objects = group_objects(prompts)
    assert len(objects) == 1 and objects[0].labels.tolist() == [1, 1, 1, 1, 0]


def test_a_long_scribble_gives_a_few_points_and_a_lasso_a_mask():
    long = np.array([[5, 5], [5, 300]], dtype=float)
    lasso = np.array([[20, 20], [20, 60], [50, 60], [50, 20]], dtype=float)  # a freehand lasso is a polygon
    layer = Shapes([long, lasso], shape_type=["path", "polygon"])
    prompts = read_prompts(Image(np.zeros((80, 320))), (), (80, 320), shapes_layer=layer)
    assert len(prompts.points) == 6 and (prompts.labels == 1).all()  # no features: positive
    np.testing.assert_allclose(prompts.boxes, [[20, 20, 50, 60]])
    assert prompts.masks[0].mask.sum() == 30 * 40  # the pixel centres inside it


@pytest.mark.parametrize("vertices, message", [
    (np.array([[10, 10], [10, 10]], dtype=float), "no length"),
    (np.array([[-40, -40], [-40, -10]], dtype=float), "outside the 60x80 image"),
])
def test_a_scribble_that_cannot_be_read_is_named(vertices, message):
    layer = Shapes([vertices], shape_type="path")
    with pytest.raises(ValueError, match=f"shape 0: a scribble .*{message}"):
        read_prompts(Image(np.zeros((60, 80))), (), (60, 80), shapes_layer=layer)


def test_brush_strokes_become_points_along_their_centre_line():
    """A 120 x 8 px positive stroke gives 6 points on its centre row, evenly along it; a dab one point; a negative
    stroke negative points; strokes of other planes nothing; a scaled brush layer is read through its transform."""
    from napari_sam.bridge.labels_grid import erase_plane

    data = np.zeros((3, 60, 200), np.uint8)
    data[1, 20:28, 40:160] = 1
    data[1, 50, 180] = 1
    data[1, 40:44, 10:34] = 2
    data[2, 5:9, 5:50] = 1
    stack = Image(np.zeros((3, 60, 200)))
    prompts = read_prompts(stack, (1,), (60, 200), brush_layer=Labels(data))
    assert prompts.labels.tolist() == [1] * 7 + [0, 0]  # 120 px: 6 points, the dab 1; 24 px: 2
    long = prompts.points[:6]
    assert set(long[:, 0]) <= {23.0, 24.0} and long[:, 1].min() < 60 and long[:, 1].max() > 140
    assert np.diff(np.sort(long[:, 1])).min() > 15  # spread along it, none bunched
    assert [50, 180] in prompts.points[:7].tolist()
    scaled = Labels(data[:, ::2, ::2], scale=(1, 2, 2))  # the same strokes at half the resolution
    coarse = read_prompts(stack, (1,), (60, 200), brush_layer=scaled)
    assert (coarse.labels == 1).sum() >= 5 and (coarse.labels == 0).any()
    assert erase_plane(scaled, stack, (1,), (60, 200)) and not scaled.data[1].any() and scaled.data[2].any()
    data[1, 0, 0] = 3
    with pytest.raises(ValueError, match=r"label 1 \(object\) or 2 \(background\).*\[3\]"):
        read_prompts(stack, (1,), (60, 200), brush_layer=Labels(data))


def test_objects_extended_through_planes_keep_their_ids_in_one_undo_step():
    from napari_sam.bridge.labels_writer import extend_objects

    image = Image(np.zeros((4, 20, 20)))
    data = np.zeros((4, 20, 20), dtype=np.uint32)
    data[1, 2:6, 2:6] = 4  # the start plane
    data[2, 15:18, 15:18] = 4  # object 4's old pixels on another plane: replaced
    data[2, 10:12, 2:4] = 7  # another object: kept
    labels = Labels(data.copy())
    new_plane = np.zeros((20, 20), np.uint32)
    new_plane[3:7, 3:7] = 4
    new_plane[10:12, 2:12] = 5
    assert extend_objects(labels, image, [((2,), new_plane)], [4, 5])
    assert (labels.data[2] == 4).sum() == 16 and (labels.data[2][15:18, 15:18] == 0).all()
    assert (labels.data[2][10:12, 2:4] == 7).all() and (labels.data[2] == 5).sum() == 16  # 7 keeps its pixels
    assert np.array_equal(labels.data[[0, 1, 3]], data[[0, 1, 3]])
    labels.undo()
    assert np.array_equal(labels.data, data)
