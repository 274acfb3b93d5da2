"""Checking prompts (core/prompts.py), shared by Predictor.predict and video propagation."""

import numpy as np
import pytest

from napari_sam.core.decoding import check_prompts

SIZE = (50, 60)  # (H, W): pixel centres 0..49 and 0..59
MASK_SIZE = 16


def test_valid_prompts_are_grouped_and_boxes_clipped():
    prompts = check_prompts([[10, 20], [30.5, 40]], [1, 0], [-5, -3, 20, 70], None, SIZE)
    assert prompts.points.dtype == np.float64 and prompts.points.shape == (2, 2)
    assert prompts.point_labels.tolist() == [1, 0] and prompts.n_objects == 1
    assert prompts.boxes.tolist() == [[0, 0, 20, 59]] and prompts.mask_input is None
    boxes = check_prompts(None, None, [[0, 0, 10, 10], [20, 20, 49.5, 59.5]], None, SIZE)
    assert boxes.n_objects == 2 and boxes.boxes[1].tolist() == [20, 20, 49, 59]
    logits = np.zeros((MASK_SIZE, MASK_SIZE), np.float32)
    assert check_prompts([[1, 2]], None, None, logits, SIZE, MASK_SIZE).mask_input.shape == (1, MASK_SIZE, MASK_SIZE)


@pytest.mark.parametrize("box", [
    [-9, 5, 0, 30],      # reaches the image only along its first row: no height inside it
    [49, 5, 70, 30],     # on the last row only
    [10, -20, 30, 0],    # on the first column only
    [10, 59, 30, 80],    # on the last column only
    [-9, -9, 0, 0],      # on the corner pixel only
])
def test_a_box_with_no_height_or_width_inside_the_image_is_rejected(box):
    with pytest.raises(ValueError, match="no height or no width inside the 50x60 image"):
        check_prompts(None, None, box, None, SIZE)
    with pytest.raises(ValueError, match="no height or no width"):
        check_prompts([[10, 10]], None, box, None, SIZE)


@pytest.mark.parametrize("box, message", [
    ([-20, 5, -2, 30], "outside the 50x60 image"),
    ([10, 61, 20, 70], "outside the 50x60 image"),
    ([10, 10, 10, 20], "Degenerate"),
    ([10, 20, 30, 5], "Degenerate"),
    ([10, np.nan, 20, 30], "NaN or inf"),
])
def test_bad_boxes_are_named(box, message):
    with pytest.raises(ValueError, match=message):
        check_prompts(None, None, box, None, SIZE)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_mask_input_with_nan_or_inf_is_rejected(bad):
    logits = np.zeros((MASK_SIZE, MASK_SIZE), np.float32)
    logits[3, 4] = bad
    with pytest.raises(ValueError, match="mask_input contains NaN or inf"):
        check_prompts([[10, 10]], None, None, logits, SIZE, MASK_SIZE)


@pytest.mark.parametrize("points, labels, message", [
    ([[50, 10]], None, "outside the 50x60 image"),
    ([[-0.6, 10]], None, "outside the 50x60 image"),
    ([[10, np.nan]], None, "NaN or inf"),
    ([[10, 10, 10]], None, r"shape \(n, 2\)"),
    ([[10, 10]], [2], "1 \\(positive\\) or 0"),
    ([[10, 10]], [1, 1], "one label per point"),
    (None, [1], "without points"),
    (None, None, "Empty prompt"),
])
def test_bad_points_are_named(points, labels, message):
    box = [5, 5, 20, 20] if message == "without points" else None
    with pytest.raises(ValueError, match=message):
        check_prompts(points, labels, box, None, SIZE)


def test_a_mask_input_needs_the_mask_size():
    with pytest.raises(ValueError, match="mask_size"):
        check_prompts([[10, 10]], None, None, np.zeros((MASK_SIZE, MASK_SIZE)), SIZE)


def test_the_predictor_rejects_them_too():
    """Predictor.predict checks its prompts with check_prompts."""
    from napari_sam import Predictor
    from napari_sam.core.model import model_geometry
    from napari_sam.testing.random_weights import random_sam, tiny_sam_config

    config = tiny_sam_config(64)
    predictor = Predictor(random_sam(config, seed=0), model_geometry(config), "cpu")
    predictor.set_image(np.random.default_rng(0).integers(0, 255, SIZE, dtype=np.uint8))
    with pytest.raises(ValueError, match="no height or no width"):
        predictor.predict(boxes=[[-9, 5, 0, 30]])
    logits = np.zeros((1, *predictor.predict(points=[[10, 10]]).logits.shape[-2:]), np.float32)
    logits[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict(points=[[10, 10]], mask_input=logits)
