"""Loading SAM checkpoints and reading their geometry.

A checkpoint is a Hugging Face hub id (``facebook/sam-vit-base``) or a local folder written by
``SamModel.save_pretrained``. Weights are read from safetensors only and no remote code is ever run.

Everything the rest of the package needs to know about a checkpoint's input and output sizes is collected in
:class:`ModelGeometry`, read from the checkpoint's ``config.json`` and, when present, its
``preprocessor_config.json`` (checked by :mod:`napari_sam.core.processor_config`: what napari-sam cannot
reproduce as transformers' ``SamProcessor`` does is refused when loading). Nothing here assumes SAM's usual
1024-pixel input.

Loading fails loudly, with a :class:`ModelLoadError` naming the checkpoint: a JSON file that does not parse, a
preprocessor config that cannot be honoured, and weights that do not fit the model (missing, unexpected or
mis-shaped tensors, which transformers would otherwise fill with random values or drop silently).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .devices import resolve_device, resolve_dtype
from .errors import ModelLoadError
from .processor_config import IMAGENET_MEAN, IMAGENET_STD, image_settings

#: Checkpoints shipped inside the package, by name (folders under ``napari_sam/models``).
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "models"

#: Checkpoints offered in the model picker, with a short description. Any other hub id or folder works too.
KNOWN_CHECKPOINTS: dict[str, str] = {
    "tiny-cells": "bundled demo model, trained on synthetic cells only (works offline; not a real segmenter)",
    "facebook/sam-vit-base": "SAM ViT-B (Meta), 94 M parameters: the default",
    "facebook/sam-vit-large": "SAM ViT-L (Meta), 312 M parameters",
    "facebook/sam-vit-huge": "SAM ViT-H (Meta), 641 M parameters: best SAM-1 masks, slowest",
    "Zigeng/SlimSAM-uniform-50": "SlimSAM, pruned SAM ViT-B at 50%: faster on CPU",
    "Zigeng/SlimSAM-uniform-77": "SlimSAM, pruned SAM ViT-B at 77%: fastest",
    "wanglab/medsam-vit-base": "MedSAM (medical images), ViT-B",
    "syscv-community/sam-hq-vit-base": "SAM-HQ ViT-B: SAM with a high-quality mask token, finer boundaries",
    "syscv-community/sam-hq-vit-large": "SAM-HQ ViT-L: finer boundaries, slower",
    "syscv-community/sam-hq-vit-huge": "SAM-HQ ViT-H: finest boundaries, slowest",
    "facebook/sam2.1-hiera-tiny": "SAM2.1 Hiera-T (Meta), 39 M parameters: fast, better masks than SAM-1 ViT-B",
    "facebook/sam2.1-hiera-small": "SAM2.1 Hiera-S (Meta), 46 M parameters",
    "facebook/sam2.1-hiera-base-plus": "SAM2.1 Hiera-B+ (Meta), 81 M parameters",
    "facebook/sam2.1-hiera-large": "SAM2.1 Hiera-L (Meta), 224 M parameters: best SAM2 masks, slowest",
    "yonigozlan/EdgeTAM-hf": "EdgeTAM: SAM2 made small for devices (its encoder needs the timm package)",
    "facebook/sam3": "SAM3 (Meta; gated: accept its licence on the hub): every instance of a text or of exemplar "
                     "boxes, in the Segment concept dock",
}

DEFAULT_CHECKPOINT = "facebook/sam-vit-base"

# ImageNet statistics: SAM's defaults when a checkpoint ships no preprocessor config.
_DEFAULT_MEAN = IMAGENET_MEAN
_DEFAULT_STD = IMAGENET_STD

#: How many of the offending weight names a loading error lists.
_NAMED_KEYS = 5


class MalformedCheckpointFile(ModelLoadError, ValueError):
    """A checkpoint's JSON file does not parse (or is not a JSON object). It is a :class:`ModelLoadError` for
    loaders and a ``ValueError`` for callers that treat an unreadable file as a bad value."""


@dataclass(frozen=True)
class ModelGeometry:
    """Sizes and normalisation of a SAM checkpoint.

    The pixel pipeline (:func:`~napari_sam.core.image_preparation.model_input`) is transformers' SAM image
    processor's: 8-bit levels, resized by Pillow's filter ``resample``, times ``rescale_factor`` if
    ``do_rescale``, normalised with ``mean``/``std`` if ``do_normalize``, zero-padded to ``pad_size`` if
    ``do_pad``. Fields after ``std`` have defaults (SAM's usual settings).

    Attributes:
        image_size: side of the square model input, in pixels (1024 for Meta's SAM).
        longest_edge: the image's longest side is resized to this many pixels (usually ``image_size``).
        pad_size: (height, width) the resized image is zero-padded to, bottom and right.
        embedding_size: side of the square image embedding (``image_size // patch_size``).
        mask_size: side of the low-resolution mask logits the decoder returns (4 x ``embedding_size``).
        mean, std: per-channel (R, G, B) normalisation, applied to the rescaled values (usually in [0, 1]).
        resample: PIL filter id of the resize: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming.
        do_rescale, rescale_factor: whether 8-bit levels (0..255) are multiplied by ``rescale_factor`` (1/255).
        do_normalize: whether ``mean``/``std`` are applied.
        do_pad: whether the resized image is padded; when False it must resize to exactly ``pad_size``.
        square: the image is stretched to the square ``pad_size`` (aspect not kept, no padding) and low-resolution
            masks are upsampled straight to the image's size, as the SAM2 family's processors do.
        family: the checkpoint's family (:data:`~napari_sam.core.families.FAMILIES`).
        max_upscale: the most an image smaller than the input is enlarged (the rest padded); 0 fills the input
            whatever the image's size, as SAM does. Set by a checkpoint trained at its images' own pixel scale
            (``"image": {"max_upscale": ...}`` in its ``napari_sam.json``), whose objects would otherwise grow
            past the sizes it knows; :meth:`Predictor.from_pretrained` sets it. Square (SAM2-family) inputs ignore
            it.
        tile_scale: model-input pixels per image pixel in a large image's tiles (0: 1, native resolution). A
            checkpoint trained on objects larger than those of its users' images sees images magnified
            (``"image": {"tile_scale": ...}``): tiles of ``image_size / tile_scale`` pixels, and with auto tiling
            every image larger than one tile is tiled. Square (SAM2-family) inputs ignore it.
    """

    image_size: int
    longest_edge: int
    pad_size: tuple[int, int]
    embedding_size: int
    mask_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = 2
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    do_pad: bool = True
    square: bool = False
    family: str = "sam"
    max_upscale: float = 0.0
    tile_scale: float = 0.0

    @property
    def default_tile(self) -> int:
        """Side of a tile in image pixels when the tiling settings leave it to the model: the input's side, or
        less for a checkpoint that sees images magnified (``tile_scale`` > 1)."""
        return int(round(self.image_size / self.tile_scale)) if self.tile_scale > 1 else self.image_size

    @property
    def whole_limit(self) -> float:
        """Auto tiling sees an image whole up to this many default tiles on its longest side: 2 (an image
        shrunk by at most half keeps most of its pixels), or 1 for a magnifying checkpoint, which would see any
        larger image below the scale it needs."""
        return 1.0 if self.tile_scale > 1 else 2.0

    def input_size(self, frame) -> tuple[int, int]:
        """(height, width) of ``frame``'s pixels inside the model input: its region times its scale (SAM), or the
        whole square input (``square``: the SAM2 family stretches every frame to it)."""
        return self.pad_size if self.square else frame.resized_size


def resolve_load_arguments(name_or_path, device, dtype, example: str) -> tuple[str, torch.device, torch.dtype]:
    """(checkpoint, device, dtype) resolved for loading; ``example`` is a hub id named when no checkpoint is given."""
    name = resolve_checkpoint(name_or_path)
    if not name:
        raise ModelLoadError(f"No checkpoint given: pass a hub id such as {example!r} or a folder.")
    resolved_device = resolve_device(device)
    return name, resolved_device, resolve_dtype(dtype, resolved_device)


def resolve_checkpoint(name_or_path: str | os.PathLike) -> str:
    """The folder of a bundled checkpoint called ``name_or_path``, else ``name_or_path`` unchanged.

    Bundled names come first, so ``"tiny-cells"`` always means the shipped model.
    """
    name = os.fspath(name_or_path)
    bundled = BUNDLED_DIR / name
    if name and "/" not in name and (bundled / "config.json").is_file():
        return str(bundled)
    return name


def geometry_from_config(config, preprocessor: dict | None = None,
                         source: str = "the preprocessor config") -> ModelGeometry:
    """Build a :class:`ModelGeometry` from a ``SamConfig`` and an optional preprocessor-config dict.

    Without a preprocessor config the sizes come from the model config, with bilinear resizing and ImageNet
    mean/std; with one, every field SAM's image processor honours is read, a missing key meaning the processor's
    own default (see :func:`~napari_sam.core.processor_config.image_settings`). ``source`` names the file in
    errors.

    Raises:
        ModelLoadError: the preprocessor config asks for what napari-sam cannot reproduce, or does not fit the model.
    """
    vision = config.vision_config
    image_size = int(vision.image_size)
    embedding_size = image_size // int(vision.patch_size)
    settings = image_settings(preprocessor, image_size, source)
    return ModelGeometry(
        image_size=image_size,
        longest_edge=settings.longest_edge,
        pad_size=settings.pad_size,
        embedding_size=embedding_size,
        mask_size=4 * embedding_size,
        mean=settings.mean,
        std=settings.std,
        resample=settings.resample,
        do_rescale=settings.do_rescale,
        rescale_factor=settings.rescale_factor,
        do_normalize=settings.do_normalize,
        do_pad=settings.do_pad,
    )


def square_geometry(config, family: str, preprocessor: dict | None = None,
                    source: str = "the preprocessor config") -> ModelGeometry:
    """The geometry of a SAM2-family checkpoint: a square input of the prompt encoder's size (1024; 1008 for SAM3),
    ImageNet mean/std (SAM3: 0.5), or the preprocessor config's ``image_mean``/``image_std``/``rescale_factor``.

    Raises:
        ModelLoadError: a preprocessor config whose size is not the model's square input.
    """
    sizes = config.vision_config.backbone_config if family == "sam3" else config.prompt_encoder_config
    side = int(sizes.image_size)
    embedding = side // int(sizes.patch_size)
    preprocessor = preprocessor or {}
    size = preprocessor.get("size")
    if size is not None and (not isinstance(size, dict) or (size.get("height"), size.get("width")) != (side, side)):
        raise ModelLoadError(f"{source} resizes to {size!r}; the model takes {side}x{side} images.")
    sam3 = family.startswith("sam3")
    mean = tuple(float(v) for v in preprocessor.get("image_mean", (0.5, 0.5, 0.5) if sam3 else IMAGENET_MEAN))
    std = tuple(float(v) for v in preprocessor.get("image_std", (0.5, 0.5, 0.5) if sam3 else IMAGENET_STD))
    return ModelGeometry(image_size=side, longest_edge=side, pad_size=(side, side), embedding_size=embedding,
                         mask_size=4 * embedding, mean=mean, std=std,
                         rescale_factor=float(preprocessor.get("rescale_factor", 1 / 255)), do_pad=False, square=True,
                         family=family)


def _read_json(name_or_path: str, filename: str) -> dict | None:
    """A JSON file of the checkpoint (local folder or hub cache) as a dict, or None when it has none.

    Raises:
        MalformedCheckpointFile: the file exists but is not valid JSON, or holds something other than an object.
    """
    folder = Path(name_or_path)
    if folder.is_dir():
        path = folder / filename
        if not path.is_file():
            return None
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(name_or_path, filename))
        except Exception:  # noqa: BLE001 - a file the checkpoint does not have (or cannot be reached)
            return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MalformedCheckpointFile(f"{filename} of {name_or_path!r} is not valid JSON ({error}): fix the file "
                                      "or download the checkpoint again.") from error
    if not isinstance(values, dict):
        raise MalformedCheckpointFile(f"{filename} of {name_or_path!r} must hold a JSON object, not a "
                                      f"{type(values).__name__}.")
    return values


def _preprocessor_source(name_or_path: str) -> tuple[dict | None, str]:
    """The image processor's settings and the file they come from, in transformers' order: the ``image_processor``
    entry of ``processor_config.json`` (as newer transformers versions save them), else ``preprocessor_config.json``
    (as hub checkpoints publish them), else None."""
    processor = _read_json(name_or_path, "processor_config.json") or {}
    source = f"processor_config.json (image_processor) of {name_or_path!r}"
    entry = processor.get("image_processor")
    if entry is not None and not isinstance(entry, dict):
        raise MalformedCheckpointFile(f"{source} must be a JSON object, not a {type(entry).__name__}.")
    if entry is not None:
        return entry, source
    return _read_json(name_or_path, "preprocessor_config.json"), f"preprocessor_config.json of {name_or_path!r}"


def _read_preprocessor_config(name_or_path: str) -> dict | None:
    """The image processor's settings (see :func:`_preprocessor_source`), or None."""
    return _preprocessor_source(name_or_path)[0]


def _named(keys, count: int = _NAMED_KEYS) -> str:
    keys = sorted(str(key) for key in keys)
    listed = ", ".join(keys[:count])
    return f"{len(keys)} ({listed}{', ...' if len(keys) > count else ''})"


def _check_loading_info(name: str, model, info: dict) -> None:
    """Raise ModelLoadError when the weights did not fill ``model`` exactly (``output_loading_info``)."""
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing {_named(info['missing_keys'])}: these would be random")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected {_named(info['unexpected_keys'])}: the weights are not this model's")
    if info.get("mismatched_keys"):
        shapes = [f"{entry[0]} {tuple(entry[1])} vs {tuple(entry[2])}"
                  if isinstance(entry, (tuple, list)) and len(entry) == 3 else str(entry)
                  for entry in info["mismatched_keys"]]  # (name, saved shape, model shape)
        problems.append(f"of the wrong shape {_named(shapes)}: the checkpoint's weights do not fit its config.json")
    if info.get("error_msgs"):
        problems.append("errors: " + "; ".join(str(message) for message in info["error_msgs"][:_NAMED_KEYS]))
    if problems:
        raise ModelLoadError(
            f"The weights of {name!r} do not fit its {type(model).__name__} (config.json): "
            + "; ".join(problems) + ". Use a checkpoint whose weights and config.json belong together."
        )


def _load_error(name_or_path: str, error: BaseException) -> ModelLoadError:
    if "gated" in f"{type(error).__name__} {error}".lower():
        return ModelLoadError(
            f"{name_or_path!r} is gated on the Hugging Face hub: log in (`hf auth login`) with an account that has "
            "accepted the model's licence on its hub page, or download it once and pass that folder's path.")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    where = "no such local folder, and " if not Path(name_or_path).exists() else ""
    hint = (
        f"Could not load the SAM checkpoint {name_or_path!r}: {where}{type(error).__name__}: {error}".rstrip()
        + "\nTo use a checkpoint without network access, download it once on a connected machine "
        "(for example `hf download facebook/sam-vit-base --local-dir sam-vit-base`, or `SamModel.from_pretrained(...)"
        ".save_pretrained(folder)` with `safe_serialization=True`) and pass that folder's path instead."
        " Only safetensors weights are read."
    )
    if offline:
        hint += " (HF_HUB_OFFLINE is set: only checkpoints already in the local cache can be found.)"
    return ModelLoadError(hint)


def load_sam(name_or_path: str | os.PathLike, device: str | torch.device | None = "auto",
             dtype: str | torch.dtype | None = None):
    """Load a checkpoint of one of the SAM families (SAM, SAM-HQ, SAM2.1, EdgeTAM, SAM3's tracker; see
    :mod:`~napari_sam.core.families`) for inference.

    Args:
        name_or_path: a bundled name (``"tiny-cells"``), a hub id such as ``"facebook/sam-vit-base"``, or a folder
            saved by ``save_pretrained``.
        device: ``"auto"`` (CUDA > MPS > CPU), or any torch device string.
        dtype: weights' dtype; None keeps float32; "auto" is bfloat16 where the device computes it fast.

    Returns:
        ``(model, geometry, device)``: the model in eval mode on ``device``, its :class:`ModelGeometry` (whose
        ``family`` names its family), and the resolved ``torch.device``.

    Raises:
        ModelLoadError: the checkpoint is missing, unreachable, corrupt or of no supported family; one of its JSON
            files does not parse; its preprocessor config cannot be reproduced; or its weights do not fit its config
            (missing, unexpected or mis-shaped tensors, named).
    """
    from .families import family_of

    name, resolved_device, resolved_dtype = resolve_load_arguments(name_or_path, device, dtype, DEFAULT_CHECKPOINT)
    try:
        raw = _read_json(name, "config.json")  # a malformed file is named as such, before transformers reads it
        family = family_of(raw.get("model_type", "sam") if raw else "sam", name)
        if family.name == "edgetam" and importlib.util.find_spec("timm") is None:
            raise ModelLoadError(f"{name!r} is an EdgeTAM checkpoint, whose image encoder comes from the timm package "
                                 "(and timm needs torchvision): install timm, or use a SAM2.1 checkpoint.")
        config_class, model_class = family.classes()
        config = config_class.from_pretrained(name)
        if family.square:
            geometry = square_geometry(config, family.name, *_preprocessor_source(name))
        else:
            geometry = dataclasses.replace(geometry_from_config(config, *_preprocessor_source(name)),
                                           family=family.name)  # checked before the weights load
        model, info = model_class.from_pretrained(name, config=config, use_safetensors=True, trust_remote_code=False,
                                                  dtype=resolved_dtype, output_loading_info=True,
                                                  ignore_mismatched_sizes=True)  # reported below, never used
    except ModelLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        raise _load_error(name, error) from error
    _check_loading_info(name, model, info)
    model.to(resolved_device).eval()
    if family.name in ("sam", "sam_hq"):
        from .fast_encoder import install

        install(model)  # the same attention without its (tokens x tokens) bias: a fraction of the memory
    return model, geometry, resolved_device
