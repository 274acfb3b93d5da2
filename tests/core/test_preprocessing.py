"""Checkpoints laid out as hub repositories (config.json + preprocessor_config.json + model.safetensors) against
transformers' own path on the same folder: ``SamProcessor.from_pretrained`` (PIL backend) + ``SamModel`` +
``post_process_masks``. Each preprocessor field SAM's image processor honours is varied; the bounds are those of
tests/core/test_equivalence.py (at most 0.5% of mask pixels disagree, scores within 1e-3).

Also: Pillow's resampling filters level for level, thin images, and flat images' contrast limits.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SamConfig, SamModel, SamProcessor
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

from napari_sam import Predictor
from napari_sam.core.image.preparation import default_contrast_limits, display_rgb, model_input, resized_shape
from napari_sam.core.image.resampling import PIL_FILTERS, pil_resize
from napari_sam.core.model import model_geometry
from napari_sam.core.settings import TilingSettings
from napari_sam.testing.random_weights import tiny_sam_config

from helpers import Reference, assert_equivalent, blob_image, make_image, processor_inputs, prompt_cases

WHOLE = TilingSettings(mode="whole")  # transformers' path sees every image whole


def published_preprocessor(image_size: int, **changes) -> dict:
    """preprocessor_config.json with the fields Meta's SAM checkpoints publish, sized for ``image_size``; a change
    to None removes the field."""
    config = {
        "do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "SamImageProcessor",
        "image_std": [0.229, 0.224, 0.225], "pad_size": {"height": image_size, "width": image_size},
        "processor_class": "SamProcessor", "resample": 2, "rescale_factor": 0.00392156862745098,
        "size": {"longest_edge": image_size},
    }
    config.update(changes)
    return {key: value for key, value in config.items() if value is not None}


def sizes_only(image_size: int) -> dict:
    return {"size": {"longest_edge": image_size}, "pad_size": {"height": image_size, "width": image_size}}


#: name -> preprocessor config for a model of input ``s`` (None: the checkpoint has no preprocessor config).
CASES = {
    "published": lambda s: published_preprocessor(s),
    "no_preprocessor_config": lambda s: None,
    "minimal_sizes_only": sizes_only,
    "do_normalize_false": lambda s: published_preprocessor(s, do_normalize=False),
    "bicubic": lambda s: published_preprocessor(s, resample=3),
    "medsam_like": lambda s: published_preprocessor(s, do_normalize=False, resample=3),
    "nearest": lambda s: published_preprocessor(s, resample=0),
    "lanczos": lambda s: published_preprocessor(s, resample=1),
    "box": lambda s: published_preprocessor(s, resample=4),
    "hamming": lambda s: published_preprocessor(s, resample=5),
    "other_mean_std": lambda s: published_preprocessor(s, image_mean=[0.3, 0.4, 0.5], image_std=[0.2, 0.25, 0.3]),
    "scalar_mean_std": lambda s: published_preprocessor(s, image_mean=0.5, image_std=0.25),
    "pixel_statistics_without_rescale": lambda s: published_preprocessor(
        s, do_rescale=False, image_mean=[123.675, 116.28, 103.53], image_std=[58.395, 57.12, 57.375]),
    "rescale_to_plus_minus_one": lambda s: published_preprocessor(
        s, rescale_factor=1 / 127.5, image_mean=1.0, image_std=1.0),
    "no_rescale_no_normalize": lambda s: published_preprocessor(s, do_rescale=False, do_normalize=False),
    "smaller_longest_edge": lambda s: published_preprocessor(s, size={"longest_edge": 3 * s // 4}),
    "int_pad_size": lambda s: published_preprocessor(s, pad_size=s),
    "do_convert_rgb_false_and_null_flag": lambda s: published_preprocessor(s, do_convert_rgb=False,
                                                                            do_center_crop=None),
    "sizes_and_bicubic_only": lambda s: dict(sizes_only(s), resample=3),
}
CASES_256 = ["published", "medsam_like"]


def hub_folder(weights_folder, destination, preprocessor: dict | None):
    """A copy of ``weights_folder`` with ``preprocessor`` written as preprocessor_config.json, as on the hub."""
    shutil.copytree(weights_folder, destination)
    if preprocessor is not None:
        (destination / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return destination


class HubReference:
    """transformers' path on a folder: its own processor (or, where the folder has none, the processor's defaults
    sized like the model, as ``SamProcessor.from_pretrained`` cannot load it), ``SamModel`` and
    ``post_process_masks``; the image embedding is computed once per image, as transformers' SAM docs show."""

    def __init__(self, folder, image_size: int):
        self.model = SamModel.from_pretrained(folder).eval()
        if (folder / "preprocessor_config.json").is_file():
            self.processor = SamProcessor.from_pretrained(folder)
        else:
            self.processor = Reference(folder, image_size).processor

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        self.image = image
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"].float()  # uint8 if not rescaled
        self.embedding = self.model.get_image_embeddings(pixels)

    @torch.no_grad()
    def __call__(self, points=None, labels=None, boxes=None):
        inputs = processor_inputs(self.processor, self.image, points, labels, boxes)
        out = self.model(image_embeddings=self.embedding, input_points=inputs.get("input_points"),
                         input_labels=inputs.get("input_labels"),
                         input_boxes=inputs.get("input_boxes"), multimask_output=True)
        masks = self.processor.post_process_masks(out.pred_masks, inputs["original_sizes"],
                                                  inputs["reshaped_input_sizes"])[0]
        return masks.numpy(), out.iou_scores[0].numpy()


#: (shape, kind) of the images a case is checked on: every size class and dtype for the main cases, one image for
#: the rest (Pillow's filters are checked level for level, without a model, below).
ALL_IMAGES = [((37, 91), "rgb_uint8"), ((300, 700), "gray_uint8"), ((700, 300), "gray_uint16")]
ONE_IMAGE = [((300, 700), "gray_uint16")]
MAIN_CASES = {"published", "no_preprocessor_config", "do_normalize_false", "bicubic", "medsam_like"}


def compare(predictor, reference, images, prompts=("box_and_points", "three_boxes")) -> list[float]:
    """Assert equivalence on every image and prompt; returns the fractions of mask pixels that disagree."""
    disagreements = []
    for shape, kind in images:
        image, limits, reference_image = make_image(kind, shape)
        predictor.set_image(image, contrast_limits=limits)
        reference.set_image(reference_image)
        for name in prompts:
            points, labels, boxes = prompt_cases(shape)[name]
            ours = predictor.predict(points=points, point_labels=labels, boxes=boxes)
            ref_masks, ref_scores = reference(points, labels, boxes)
            assert_equivalent(ours, ref_masks, ref_scores)
            disagreements.append(float((ours.masks != ref_masks).mean()))
    return disagreements


@pytest.mark.parametrize("case", list(CASES))
def test_preprocessor_configs_match_transformers_64(case, bare_weights, tmp_path):
    folder = hub_folder(bare_weights[64], tmp_path / case, CASES[case](64))
    predictor = Predictor.from_pretrained(folder, device="cpu", tiling=WHOLE)
    compare(predictor, HubReference(folder, 64), ALL_IMAGES if case in MAIN_CASES else ONE_IMAGE)


@pytest.mark.parametrize("case", CASES_256)
def test_preprocessor_configs_match_transformers_256(case, bare_weights, tmp_path):
    folder = hub_folder(bare_weights[256], tmp_path / case, CASES[case](256))
    predictor = Predictor.from_pretrained(folder, device="cpu", tiling=WHOLE)
    compare(predictor, HubReference(folder, 256), [((513, 200), "rgb_uint8")])


def test_masks_follow_the_image_and_the_config(bare_weights, tmp_path):
    """Random weights must not make masks image-independent, nor the preprocessing irrelevant."""
    shape = (300, 700)
    points, labels, boxes = prompt_cases(shape)["box_and_points"]
    results = {}
    for case in ("published", "medsam_like"):
        folder = hub_folder(bare_weights[64], tmp_path / case, CASES[case](64))
        predictor = Predictor.from_pretrained(folder, device="cpu", tiling=WHOLE)
        for seed in (0, 7):
            predictor.set_image(make_image("gray_uint8", shape, seed=seed)[0])
            results[case, seed] = predictor.predict(points=points, point_labels=labels, boxes=boxes)
    for case in ("published", "medsam_like"):
        assert (results[case, 0].masks != results[case, 7].masks).mean() > 0.02
        assert 0.01 < results[case, 0].masks.mean() < 0.99
    assert (results["published", 0].masks != results["medsam_like", 0].masks).mean() > 0.02


def test_do_pad_false_takes_square_images_only(bare_weights, tmp_path):
    folder = hub_folder(bare_weights[64], tmp_path / "no-pad", published_preprocessor(64, do_pad=False))
    predictor = Predictor.from_pretrained(folder, device="cpu", tiling=WHOLE)
    assert predictor.geometry.do_pad is False
    compare(predictor, HubReference(folder, 64), [((100, 100), "rgb_uint8"), ((64, 64), "gray_uint8"),
                                                  ((40, 40), "gray_uint16")])
    predictor.set_image(make_image("rgb_uint8", (37, 91))[0])  # lazy: the model input is made when needed
    with pytest.raises(ValueError, match="do_pad"):
        predictor.precompute()


@pytest.mark.parametrize("preprocessor", ["none", "type_only", "published"])
def test_minimal_config_json_takes_transformers_defaults(preprocessor, minimal_config_weights, tmp_path):
    defaults = SamConfig().vision_config
    config = {"none": None, "type_only": {"image_processor_type": "SamImageProcessor"},
              "published": published_preprocessor(defaults.image_size)}[preprocessor]
    folder = hub_folder(minimal_config_weights, tmp_path / preprocessor, config)
    predictor = Predictor.from_pretrained(folder, device="cpu", tiling=WHOLE)
    geometry = predictor.geometry
    embedding = defaults.image_size // defaults.patch_size
    assert (geometry.image_size, geometry.longest_edge, geometry.pad_size) == (
        defaults.image_size, defaults.image_size, (defaults.image_size,) * 2)
    assert (geometry.embedding_size, geometry.mask_size) == (embedding, 4 * embedding)
    compare(predictor, HubReference(folder, defaults.image_size), ONE_IMAGE, prompts=["box_and_points"])


@pytest.mark.parametrize("case", list(CASES))
def test_pixel_values_are_transformers_bit_for_bit(case):
    """The model input itself, without a model: identical to the processor's pixel values, bit for bit."""
    image_size = 64
    preprocessor = CASES[case](image_size)
    geometry = model_geometry(tiny_sam_config(image_size), "sam", preprocessor)
    if preprocessor is None:
        processor = SamImageProcessorPil(size={"longest_edge": image_size},
                                         pad_size={"height": image_size, "width": image_size})
    else:
        processor = SamImageProcessorPil.from_dict(preprocessor)
    for (shape, kind) in ALL_IMAGES + [((513, 200), "rgb_uint8"), ((20, 30), "gray_uint8")]:
        image, limits, reference_image = make_image(kind, shape)
        ours = model_input(display_rgb(image, limits), geometry)
        expected = processor(images=reference_image, return_tensors="pt")["pixel_values"].float()
        assert ours.shape == expected.shape and ours.dtype == torch.float32
        assert torch.equal(ours, expected), f"{shape} {kind}: {(ours - expected).abs().max()}"


# --- Pillow's filters, level for level ------------------------------------------------------------------------

@pytest.mark.parametrize("resample", list(PIL_FILTERS))
def test_pil_resize_is_pillow_level_for_level(resample):
    rng = np.random.default_rng(resample)
    shapes = [((37, 91), (26, 64)), ((700, 300), (256, 110)), ((300, 701), (110, 256)), ((20, 30), (171, 256)),
              ((513, 1), (256, 1)), ((90, 40), (60, 70)), ((57, 111), (12, 52)), ((100, 49), (60, 30))]
    for (height, width), size in shapes:
        image = (np.cumsum(rng.integers(-40, 41, (height, width, 3)), axis=1) % 256).astype(np.uint8)
        expected = np.asarray(Image.fromarray(image).resize(size[::-1], resample=resample)).transpose(2, 0, 1)
        ours = pil_resize(torch.from_numpy(image).permute(2, 0, 1), size, resample)
        assert ours.dtype == torch.uint8 and tuple(ours.shape) == (3, *size)
        np.testing.assert_array_equal(ours.numpy(), expected, err_msg=f"{(height, width)} -> {size}")


def test_pil_resize_refuses_unknown_filters_and_empty_sizes():
    levels = torch.zeros((3, 4, 4), dtype=torch.uint8)
    with pytest.raises(ValueError, match="filter"):
        pil_resize(levels, (2, 2), 6)
    with pytest.raises(ValueError, match="at least 1"):
        pil_resize(levels, (0, 2))


# --- thin images ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 513), (513, 1), (2, 1025), (1025, 2)])
def test_thin_images_are_segmented(shape, tiny_checkpoints):
    predictor = Predictor.from_pretrained(tiny_checkpoints[256], device="cpu", tiling=WHOLE)
    longest_edge = predictor.geometry.longest_edge
    resized = resized_shape(shape, longest_edge)
    assert min(resized) == 1 and max(resized) == longest_edge
    image = (blob_image((max(shape), max(shape)))[: shape[0], : shape[1]] * 255).astype(np.uint8)
    predictor.set_image(image)
    prediction = predictor.predict(points=[[shape[0] // 2, shape[1] // 2]])
    assert prediction.masks.shape == (1, 3, *shape)
    assert np.isfinite(prediction.scores).all()


# --- flat images and contrast limits --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int32])
def test_flat_images_get_usable_default_limits(dtype, tiny_checkpoint):
    flat = np.full((40, 50), 1000, dtype=dtype)
    limits = default_contrast_limits(flat, False)
    assert limits == (1000.0, 1001.0)
    assert display_rgb(flat, contrast_limits=limits).max() == 0.0  # shown black, as without limits
    np.testing.assert_array_equal(display_rgb(flat).numpy(), display_rgb(flat, contrast_limits=limits).numpy())
    predictor = Predictor.from_pretrained(tiny_checkpoint, device="cpu", tiling=WHOLE)
    predictor.set_image(flat, contrast_limits=limits)
    assert predictor.predict(points=[[20, 25]]).masks.shape == (1, 3, 40, 50)


def test_flat_limits_where_one_is_below_the_rounding():
    huge = np.full((4, 4), 1e30)
    low, high = default_contrast_limits(huge, False)
    assert low == 1e30 and high > low and np.isfinite(high)
    top = np.full((4, 4), np.finfo(np.float64).max)
    low, high = default_contrast_limits(top, False)
    assert np.isfinite(low) and np.isfinite(high) and low < high
    assert display_rgb(huge).max() == 0.0


@pytest.mark.parametrize("limits", [5, 5.0, "0 100", (1,), (1, 2, 3), (1, None), [[0, 1]], {"low": 0, "high": 1}])
def test_malformed_contrast_limits_name_them(limits):
    image = np.zeros((8, 8), np.uint16)
    with pytest.raises(ValueError, match="contrast_limits"):
        display_rgb(image, contrast_limits=limits)
