"""Loading checkpoints of the SAM families: which checkpoint a name means, its JSON files, and the model.

A checkpoint is a bundled name (``tiny-cells``), a Hugging Face hub id (``facebook/sam-vit-base``) or a local folder
written by ``save_pretrained``. Weights are read from safetensors only and no remote code is ever run.

Loading fails loudly, with a :class:`~napari_sam.core.errors.ModelLoadError` naming the checkpoint: a folder that
holds no checkpoint, a JSON file that does not parse, a preprocessor config that cannot be honoured (see
:mod:`~napari_sam.core.model.processor_config`), and weights that do not fit the model (missing, unexpected or
mis-shaped tensors, which transformers would otherwise fill with random values or drop silently).
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..settings import FramingSettings
from .devices import resolve_device, resolve_dtype
from .families import family_of
from .fast_encoder import install as install_fast_attention
from .geometry import ModelGeometry, model_geometry

#: Checkpoints shipped inside the package, by name (folders under ``napari_sam/models``).
BUNDLED_DIR = Path(__file__).resolve().parents[2] / "models"

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

#: How many of the offending weight names a loading error lists.
_NAMED_KEYS = 5

#: transformers' loading is not thread-safe: its lazy module attributes and the context that builds a model's
#: weights on the meta device patch process-wide state, so two loads at once (two docks, or two threads) fail with
#: false errors ("weights do not fit", "module 'transformers' has no attribute ..."). Loads take turns.
LOADING_LOCK = threading.Lock()


class MalformedCheckpointFile(ModelLoadError, ValueError):
    """A checkpoint's JSON file does not parse (or is not a JSON object). It is a :class:`ModelLoadError` for
    loaders and a ``ValueError`` for callers that treat an unreadable file as a bad value."""


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


def require_config(name_or_path: str, what: str = "checkpoint") -> None:
    """Refuse a local folder that holds no ``config.json``: it is not a saved checkpoint (transformers would report
    every weight as missing before failing with another message). Hub ids are left to the loader."""
    folder = Path(name_or_path)
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ModelLoadError(f"The {what} folder {name_or_path} holds no config.json: it is not a saved checkpoint. "
                             "Give the folder that save_pretrained wrote (or `hf download` fetched), or a hub id.")


def read_checkpoint_json(name_or_path: str, filename: str) -> dict | None:
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


def preprocessor_source(name_or_path: str) -> tuple[dict | None, str]:
    """The image processor's settings and the file they come from, in transformers' order: the ``image_processor``
    entry of ``processor_config.json`` (as newer transformers versions save them), else ``preprocessor_config.json``
    (as hub checkpoints publish them), else None."""
    processor = read_checkpoint_json(name_or_path, "processor_config.json") or {}
    source = f"processor_config.json (image_processor) of {name_or_path!r}"
    entry = processor.get("image_processor")
    if entry is not None and not isinstance(entry, dict):
        raise MalformedCheckpointFile(f"{source} must be a JSON object, not a {type(entry).__name__}.")
    if entry is not None:
        return entry, source
    source = f"preprocessor_config.json of {name_or_path!r}"
    return read_checkpoint_json(name_or_path, "preprocessor_config.json"), source


def _named(keys, count: int = _NAMED_KEYS) -> str:
    keys = sorted(str(key) for key in keys)
    listed = ", ".join(keys[:count])
    return f"{len(keys)} ({listed}{', ...' if len(keys) > count else ''})"


def check_loading_info(name: str, model, info: dict) -> None:
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


def load_error(name_or_path: str, error: BaseException) -> ModelLoadError:
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
             dtype: str | torch.dtype | None = None,
             framing: FramingSettings | None = None) -> tuple[torch.nn.Module, ModelGeometry, torch.device]:
    """Load a checkpoint of one of the SAM families (SAM, SAM-HQ, SAM2.1, EdgeTAM, SAM3's tracker and concept
    model; see :mod:`~napari_sam.core.model.families`) for inference.

    Args:
        name_or_path: a bundled name (``"tiny-cells"``), a hub id such as ``"facebook/sam-vit-base"``, or a folder
            saved by ``save_pretrained``.
        device: ``"auto"`` (CUDA > MPS > CPU), or any torch device string.
        dtype: weights' dtype; None keeps float32; "auto" is bfloat16 where the device computes it fast.
        framing: how the checkpoint fits images into its input (its recommendations' ``image`` section).

    Returns:
        ``(model, geometry, device)``: the model in eval mode on ``device``, its :class:`ModelGeometry` (whose
        ``family`` names its family), and the resolved ``torch.device``.

    Raises:
        ModelLoadError: the checkpoint is missing, unreachable, corrupt or of no supported family; one of its JSON
            files does not parse; its preprocessor config cannot be reproduced; or its weights do not fit its config
            (missing, unexpected or mis-shaped tensors, named).
    """
    name, resolved_device, resolved_dtype = resolve_load_arguments(name_or_path, device, dtype, DEFAULT_CHECKPOINT)
    require_config(name)
    try:
        raw = read_checkpoint_json(name, "config.json")  # a malformed file is named as such, before transformers
        family = family_of(raw.get("model_type", "sam") if raw else "sam", name)
        if family.name == "edgetam" and importlib.util.find_spec("timm") is None:
            raise ModelLoadError(f"{name!r} is an EdgeTAM checkpoint, whose image encoder comes from the timm package "
                                 "(and timm needs torchvision): install timm, or use a SAM2.1 checkpoint.")
        with LOADING_LOCK:
            config_class, model_class = family.classes()
            config = config_class.from_pretrained(name)
            geometry = model_geometry(config, family.name, *preprocessor_source(name),
                                      framing=framing)  # checked before the weights load
            model, info = model_class.from_pretrained(name, config=config, use_safetensors=True,
                                                      trust_remote_code=False, dtype=resolved_dtype,
                                                      output_loading_info=True,
                                                      ignore_mismatched_sizes=True)  # reported below, never used
    except ModelLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        raise load_error(name, error) from error
    check_loading_info(name, model, info)
    model.to(resolved_device).eval()
    if family.name in ("sam", "sam_hq"):
        install_fast_attention(model)  # the same attention without its (tokens x tokens) bias: a fraction of the memory
    return model, geometry, resolved_device
