"""Loading refuses, naming the problem, what would otherwise load wrong: weights that do not fit the config,
JSON files that do not parse, and preprocessor configs napari-sam cannot reproduce as transformers does."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import SamModel, SamProcessor
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

import napari_sam
from napari_sam import Predictor
from napari_sam.core import errors
from napari_sam.core.errors import ModelLoadError
from napari_sam.core.model import is_video_checkpoint, load_sam, read_recommendations
from napari_sam.core.model import loading as model_loading
from napari_sam.core.model.processor_config import IMAGENET_MEAN, IMAGENET_STD, SAM_PROCESSOR_DEFAULTS
from napari_sam.testing.random_weights import random_sam, tiny_sam_config


def checkpoint(weights, folder, preprocessor: dict | None = None):
    shutil.copytree(weights, folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


def sized(**changes) -> dict:
    """A preprocessor config that fits the 64-input model, with ``changes``."""
    return {"size": {"longest_edge": 64}, "pad_size": {"height": 64, "width": 64}, **changes}


def test_model_load_error_is_the_errors_module_one():
    assert model_loading.ModelLoadError is errors.ModelLoadError is napari_sam.ModelLoadError


# --- weights that do not fit the config -----------------------------------------------------------------------

def rewrite_weights(folder, change):
    tensors = load_file(folder / "model.safetensors")
    save_file(change(tensors), folder / "model.safetensors", metadata={"format": "pt"})


def test_missing_weights_are_named(bare_weights, tmp_path):
    folder = checkpoint(bare_weights[64], tmp_path / "no-decoder")
    rewrite_weights(folder, lambda t: {k: v for k, v in t.items() if not k.startswith("mask_decoder.")})
    n_decoder = sum(k.startswith("mask_decoder.") for k in SamModel(tiny_sam_config(64)).state_dict())
    with pytest.raises(ModelLoadError, match=rf"missing {n_decoder} \(mask_decoder\.") as info:
        load_sam(folder, device="cpu")
    assert "no-decoder" in str(info.value)


def test_unexpected_weights_are_named(bare_weights, tmp_path):
    folder = checkpoint(bare_weights[64], tmp_path / "extra")
    rewrite_weights(folder, lambda t: {**t, "extra_head.weight": torch.zeros(3)})
    with pytest.raises(ModelLoadError, match=r"unexpected 1 \(extra_head\.weight\)"):
        load_sam(folder, device="cpu")


def test_mis_shaped_weights_are_named(bare_weights, tmp_path):
    folder = checkpoint(bare_weights[64], tmp_path / "other-mlp")
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["mlp_dim"] = 2 * config["vision_config"]["mlp_dim"]  # config.json of another model
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"wrong shape \d+ \(vision_encoder\.layers\.0\.mlp\.lin1\.bias"):
        load_sam(folder, device="cpu")


def test_foreign_weights_are_refused(bare_weights, tmp_path):
    folder = checkpoint(bare_weights[64], tmp_path / "foreign")
    rewrite_weights(folder, lambda t: {"backbone.stem.weight": torch.zeros(4, 3)})
    with pytest.raises(ModelLoadError, match=r"missing \d+ .*unexpected 1 \(backbone\.stem\.weight\)"):
        load_sam(folder, device="cpu")


def test_fitting_weights_load_without_complaint(bare_weights, tmp_path):
    model, geometry, _ = load_sam(checkpoint(bare_weights[64], tmp_path / "fine"), device="cpu")
    reference = random_sam(tiny_sam_config(64), seed=5)  # the bare_weights fixture's
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, msg=name)
    # no preprocessor config: sizes from the model, SAM's usual pixel pipeline
    assert (geometry.longest_edge, geometry.pad_size, geometry.mean, geometry.std) == (
        64, (64, 64), IMAGENET_MEAN, IMAGENET_STD)
    assert (geometry.resample, geometry.do_rescale, geometry.do_normalize, geometry.do_pad) == (2, True, True, True)


# --- JSON files that do not parse -----------------------------------------------------------------------------

@pytest.mark.parametrize("filename", ["preprocessor_config.json", "processor_config.json", "config.json"])
def test_malformed_json_names_the_file_and_the_problem(filename, bare_weights, tmp_path):
    folder = checkpoint(bare_weights[64], tmp_path / "malformed")
    (folder / filename).write_text('{"size": {"longest_edge": 64,}')
    with pytest.raises(ModelLoadError, match=rf"{filename} of .*malformed.* is not valid JSON .*line 1 column"):
        Predictor.from_pretrained(folder, device="cpu")
    # callers that read a bad file as a bad value keep doing so
    if filename == "config.json":
        assert is_video_checkpoint(folder) is False
    with pytest.raises(ValueError):
        model_loading.read_checkpoint_json(str(folder), filename)


def test_json_that_is_not_an_object_is_refused(bare_weights, tmp_path):
    folder = checkpoint(bare_weights[64], tmp_path / "list")
    (folder / "preprocessor_config.json").write_text("[64, 64]")
    with pytest.raises(ModelLoadError, match="preprocessor_config.json .* JSON object"):
        load_sam(folder, device="cpu")
    (folder / "preprocessor_config.json").unlink()
    (folder / "processor_config.json").write_text(json.dumps({"image_processor": [1, 2]}))
    with pytest.raises(ModelLoadError, match="processor_config.json .* JSON object"):
        load_sam(folder, device="cpu")


def test_malformed_recommendations_still_raise_model_load_error(bare_weights, tmp_path):
    folder = checkpoint(bare_weights[64], tmp_path / "recommend")
    (folder / "napari_sam.json").write_text("{")
    with pytest.raises(ModelLoadError, match="napari_sam.json"):
        read_recommendations(str(folder))


# --- preprocessor configs that cannot be reproduced -----------------------------------------------------------

REFUSED = [
    ({"do_resize": False}, "do_resize is false"),
    ({"do_resize": None}, "do_resize is false"),
    ({"size": 64}, "size must be"),  # the legacy int form: transformers itself fails on it
    ({"size": {"shortest_edge": 64}}, "size must be"),
    ({"size": {"longest_edge": 0}}, "size.longest_edge must be a positive integer"),
    ({"size": {"longest_edge": 128}}, "Inconsistent checkpoint: size.longest_edge 128"),
    ({"pad_size": {"height": 32, "width": 32}}, "Inconsistent checkpoint: pad_size 32x32"),
    ({"pad_size": {"height": 64, "width": 128}}, "pad_size 64x128"),
    ({"pad_size": [64, 64]}, "pad_size must be"),
    ({"resample": 6}, "resample 6 is Pillow's MKS2013"),
    ({"resample": 7}, "resample 7 is Pillow's MKS2021"),
    ({"resample": "bicubic"}, "resample must be a PIL filter id"),
    ({"resample": True}, "resample must be a PIL filter id"),
    ({"resample": 9}, "resample must be a PIL filter id"),
    ({"do_center_crop": True, "crop_size": {"height": 32, "width": 32}}, "do_center_crop is set"),
    ({"do_pad": False, "size": {"longest_edge": 48}}, "do_pad is false with size.longest_edge 48"),
    ({"image_std": 0}, "image_std must be above 0"),
    ({"rescale_factor": 0}, "rescale_factor must be above 0"),
    ({"image_mean": [0.5, 0.5]}, "image_mean must be one number or three"),
    ({"image_mean": "imagenet"}, "image_mean must be a finite number"),
    ({"image_std": [0.2, float("nan"), 0.2]}, "image_std must be a finite number"),
    ({"do_normalize": "yes"}, "do_normalize must be true or false"),
    ({"do_rescale": 1}, "do_rescale must be true or false"),
    ({"rescale_factor": None}, "rescale_factor must be a finite number"),
]


@pytest.mark.parametrize(("changes", "message"), REFUSED, ids=[message for _, message in REFUSED])
def test_unreproducible_preprocessor_fields_are_refused(changes, message, bare_weights, tmp_path):
    folder = checkpoint(bare_weights[64], tmp_path / "refused", sized(**changes))
    with pytest.raises(ModelLoadError, match=message) as info:
        load_sam(folder, device="cpu")
    assert "preprocessor_config.json of " in str(info.value)


def test_processor_config_entries_are_checked_too(bare_weights, tmp_path):
    folder = checkpoint(bare_weights[64], tmp_path / "processor")
    (folder / "processor_config.json").write_text(json.dumps({"image_processor": sized(resample=6)}))
    with pytest.raises(ModelLoadError, match=r"processor_config.json \(image_processor\) of .*resample 6"):
        load_sam(folder, device="cpu")


def test_missing_sizes_take_the_processor_defaults(bare_weights, tmp_path):
    """A preprocessor config without sizes means SAM's 1024-pixel defaults: refused for a 64-input model, as
    transformers' own path cannot run it either."""
    folder = checkpoint(bare_weights[64], tmp_path / "no-sizes", {"image_processor_type": "SamImageProcessor"})
    default_pad = SAM_PROCESSOR_DEFAULTS["pad_size"]["height"]
    with pytest.raises(ModelLoadError, match=f"pad_size {default_pad}x{default_pad}"):
        load_sam(folder, device="cpu")
    processor = SamProcessor.from_pretrained(folder)
    pixels = processor(images=np.zeros((20, 30, 3), np.uint8), return_tensors="pt")["pixel_values"]
    with pytest.raises(ValueError):
        SamModel.from_pretrained(folder).get_image_embeddings(pixels)


@pytest.mark.parametrize("changes", [
    {"mask_size": {"longest_edge": 999}, "mask_pad_size": {"height": 7, "width": 7}},  # training labels only
    {"do_convert_rgb": False},
    {"do_convert_rgb": None, "do_center_crop": False},
    {"do_rescale": False, "rescale_factor": None},  # unused
    {"do_normalize": False, "image_mean": None, "image_std": 0},  # unused
    {"pad_size": 64, "image_mean": 0.5, "image_std": [0.25, 0.5, 1]},
])
def test_harmless_fields_are_accepted(changes, bare_weights, tmp_path):
    geometry = load_sam(checkpoint(bare_weights[64], tmp_path / "accepted", sized(**changes)), device="cpu")[1]
    assert geometry.pad_size == (64, 64) and len(geometry.mean) == len(geometry.std) == 3


def test_partial_configs_take_the_processor_defaults(bare_weights, tmp_path):
    geometry = load_sam(checkpoint(bare_weights[64], tmp_path / "partial", sized(do_normalize=False)), device="cpu")[1]
    defaults = SamImageProcessorPil()
    assert geometry.do_normalize is False
    assert (geometry.resample, geometry.rescale_factor, geometry.do_rescale, geometry.do_pad) == (
        int(defaults.resample), defaults.rescale_factor, defaults.do_rescale, defaults.do_pad)
    assert geometry.mean == tuple(defaults.image_mean) and geometry.std == tuple(defaults.image_std)


def _plain(value):
    """transformers' attribute values (SizeDict, enums, tuples) as plain JSON-like values."""
    if hasattr(value, "keys") or type(value).__name__ == "SizeDict":
        items = value.items() if hasattr(value, "items") else vars(value).items()
        return {key: item for key, item in items if item is not None}
    if isinstance(value, (list, tuple)):
        return [float(item) for item in value]
    return int(value) if type(value).__name__ == "Resampling" else value


def test_defaults_are_the_sam_image_processors():
    processor = SamImageProcessorPil()
    saved = processor.to_dict()
    for key, value in SAM_PROCESSOR_DEFAULTS.items():
        assert _plain(value) == _plain(getattr(processor, key)), key
    # every setting the processor saves is known here
    assert set(saved) - {"image_processor_type"} <= set(SAM_PROCESSOR_DEFAULTS)


def test_loads_at_once_from_several_threads_all_succeed_and_are_whole():
    """Two docks (or threads) loading at once both failed, with false errors ("weights do not fit (missing ...
    positional_embedding)", "module 'transformers' has no attribute 'SamConfig'"): transformers' loading patches
    process-wide state. Loads now take turns, and every one gives the checkpoint's weights."""
    from napari_sam import Predictor

    from helpers import in_threads

    loaded = in_threads(lambda: Predictor.from_pretrained("tiny-cells", device="cpu"))
    assert len(loaded) == 4
    reference = loaded[0].model.state_dict()
    for predictor in loaded[1:]:
        for name, tensor in predictor.model.state_dict().items():
            torch.testing.assert_close(tensor, reference[name], msg=name)
