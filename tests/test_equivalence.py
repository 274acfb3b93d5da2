"""Our Predictor against transformers' own path: SamImageProcessor (PIL backend) + SamModel + post_process_masks.

Both sides load the same tiny checkpoint (seeded random weights, saved and reloaded). The reference gets the
image as uint8 RGB, prepared here independently of napari_sam (contrast mapping, gray to RGB), and prompts
swapped to (x, y). Bounds: at most 0.5% of mask pixels disagree, scores within 1e-3.
"""

import numpy as np
import pytest
import torch
from transformers import SamModel, SamProcessor
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

from napari_sam import Predictor
from napari_sam.core.settings import TilingSettings

from helpers import blob_image, processor_inputs

WHOLE = TilingSettings(mode="whole")  # transformers' path sees every image whole

SHAPES = [(37, 91), (300, 700), (700, 300)]
KINDS = ["rgb_uint8", "gray_uint8", "rgba_uint8", "gray_uint16", "float_nan"]
MAX_DISAGREEMENT = 0.005
SCORE_TOLERANCE = 1e-3


def make_image(kind: str, shape, seed: int = 0):
    """(image as napari holds it, contrast limits to pass, uint8 RGB(A) the reference gets)."""
    base = blob_image(shape, seed)
    rng = np.random.default_rng(seed + 100)
    if kind == "rgb_uint8":
        rgb = np.stack([base, blob_image(shape, seed + 1), blob_image(shape, seed + 2)], axis=-1)
        image = (rgb * 255).round().astype(np.uint8)
        return image, None, image
    if kind == "gray_uint8":
        image = (base * 255).round().astype(np.uint8)
        return image, None, np.stack([image] * 3, axis=-1)
    if kind == "rgba_uint8":
        rgb = np.stack([base, blob_image(shape, seed + 1), base[::-1]], axis=-1)
        alpha = np.clip(0.6 + 0.4 * blob_image(shape, seed + 3), 0, 1)[..., None]
        image = (np.concatenate([rgb, alpha], axis=-1) * 255).round().astype(np.uint8)
        return image, None, image  # transformers composites RGBA onto white
    if kind == "gray_uint16":
        image = (base * 30000 + 1000 + rng.normal(0, 50, shape)).clip(0, 65535).astype(np.uint16)
        low, high = 3000.0, 25000.0
        display = np.clip((image.astype(np.float64) - low) / (high - low), 0, 1)
        return image, (low, high), np.stack([(display * 255).round().astype(np.uint8)] * 3, axis=-1)
    if kind == "float_nan":
        image = (base * 7.5 - 2.0).astype(np.float32)
        image[rng.random(shape) < 0.01] = np.nan
        low, high = np.nanpercentile(image, [0.5, 99.5])
        display = np.nan_to_num(np.clip((image - low) / (high - low), 0, 1), nan=0.0)
        return image, None, np.stack([(display * 255).round().astype(np.uint8)] * 3, axis=-1)
    raise AssertionError(kind)


def prompt_cases(shape):
    """name -> (points (row, col), labels, boxes (row_min, col_min, row_max, col_max))."""
    h, w = shape
    box = [0.2 * h, 0.25 * w, 0.7 * h, 0.8 * w]
    three = [box, [0.05 * h, 0.05 * w, 0.45 * h, 0.4 * w], [0.5 * h, 0.55 * w, 0.95 * h, 0.97 * w]]
    return {
        "one_point": ([[0.4 * h, 0.6 * w]], [1], None),
        "pos_neg_points": ([[0.4 * h, 0.6 * w], [0.7 * h, 0.2 * w], [0.15 * h, 0.85 * w]], [1, 0, 1], None),
        "one_box": (None, None, [box]),
        "three_boxes": (None, None, three),
        "box_and_points": ([[0.45 * h, 0.5 * w], [0.3 * h, 0.3 * w]], [1, 0], [box]),
    }


class Reference:
    """transformers' documented SAM path, one call per prompt."""

    def __init__(self, folder, image_size):
        self.model = SamModel.from_pretrained(folder).eval()
        self.processor = SamProcessor(image_processor=SamImageProcessorPil(
            size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size}))

    @torch.no_grad()
    def __call__(self, image, points=None, labels=None, boxes=None, mask_input=None):
        inputs = processor_inputs(self.processor, image, points, labels, boxes)
        pixels = inputs["pixel_values"].float()  # uint8 when the processor neither rescales nor normalises
        out = self.model(pixel_values=pixels, input_points=inputs.get("input_points"),
                         input_labels=inputs.get("input_labels"), input_boxes=inputs.get("input_boxes"),
                         input_masks=mask_input, multimask_output=True)
        masks = self.processor.post_process_masks(out.pred_masks, inputs["original_sizes"],
                                                  inputs["reshaped_input_sizes"])[0]
        return masks.numpy(), out.iou_scores[0].numpy(), out.pred_masks[0]


def assert_equivalent(ours, ref_masks, ref_scores):
    assert ours.masks.shape == ref_masks.shape
    assert ours.masks.dtype == bool
    disagreement = (ours.masks != ref_masks).mean()
    assert disagreement <= MAX_DISAGREEMENT, f"{disagreement:.4%} of mask pixels disagree"
    np.testing.assert_allclose(ours.scores, ref_scores, atol=SCORE_TOLERANCE)


def assert_cases_equivalent(predictor, reference, reference_image, shape):
    """Every prompt case on the predictor's current image, then a mask input from a previous call (the best
    candidate's low-res logits feed the next prediction), against ``reference(image, points, labels, boxes,
    mask_input=)``."""
    for name, (points, labels, boxes) in prompt_cases(shape).items():
        ours = predictor.predict(points=points, point_labels=labels, boxes=boxes)
        ref_masks, ref_scores, _ = reference(reference_image, points, labels, boxes)
        assert ours.masks.shape[:2] == (1 if boxes is None else len(boxes), 3), name
        assert_equivalent(ours, ref_masks, ref_scores)
    points, labels, _ = prompt_cases(shape)["one_point"]
    first = predictor.predict(points=points, point_labels=labels)
    _, ref_first_scores, ref_low_res = reference(reference_image, points, labels)
    best = int(ref_first_scores[0].argmax())
    assert int(first.best()[0]) == best
    refined_points = points + [[0.6 * shape[0], 0.3 * shape[1]]]
    ours = predictor.predict(points=refined_points, point_labels=[1, 0], mask_input=first.best_logits())
    ref_masks, ref_scores, _ = reference(reference_image, refined_points, [1, 0],
                                         mask_input=ref_low_res[:, best][None])
    assert_equivalent(ours, ref_masks, ref_scores)


@pytest.fixture(scope="module")
def references(tiny_checkpoints):
    return {size: Reference(folder, size) for size, folder in tiny_checkpoints.items()}


@pytest.fixture(scope="module")
def predictors(tiny_checkpoints):
    return {size: Predictor.from_pretrained(folder, device="cpu", tiling=WHOLE)
            for size, folder in tiny_checkpoints.items()}


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
