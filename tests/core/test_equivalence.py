"""Our Predictor against transformers' own path: SamImageProcessor (PIL backend) + SamModel + post_process_masks.

Both sides load the same tiny checkpoint (seeded random weights, saved and reloaded). The reference gets the
image as uint8 RGB, prepared here independently of napari_sam (contrast mapping, gray to RGB), and prompts
swapped to (x, y). Bounds: at most 0.5% of mask pixels disagree, scores within 1e-3.
"""

import numpy as np
import pytest

from napari_sam.core.settings import TilingSettings

from helpers import assert_cases_equivalent, make_image, prompt_cases

WHOLE = TilingSettings(mode="whole")  # transformers' path sees every image whole

SHAPES = [(37, 91), (300, 700), (700, 300)]
KINDS = ["rgb_uint8", "gray_uint8", "rgba_uint8", "gray_uint16", "float_nan"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("image_size", [64, 256])
def test_matches_transformers(image_size, shape, kind, predictors, references):
    predictor, reference = predictors[image_size], references[image_size]
    image, limits, reference_image = make_image(kind, shape)
    predictor.set_image(image, contrast_limits=limits)
    assert_cases_equivalent(predictor, reference, reference_image, shape)


@pytest.mark.parametrize("image_size", [64, 256])
def test_masks_follow_the_image(image_size, predictors):
    """Random weights must not make masks image-independent: another image gives other masks."""
    predictor = predictors[image_size]
    shape = (300, 700)
    points, labels, boxes = prompt_cases(shape)["box_and_points"]
    predictor.set_image(make_image("gray_uint8", shape, seed=0)[0])
    first = predictor.predict(points=points, point_labels=labels, boxes=boxes)
    predictor.set_image(make_image("gray_uint8", shape, seed=7)[0])
    second = predictor.predict(points=points, point_labels=labels, boxes=boxes)
    assert (first.masks != second.masks).mean() > 0.02
    assert np.abs(first.scores - second.scores).max() > 1e-3
    assert 0.01 < first.masks.mean() < 0.99  # neither empty nor everything
