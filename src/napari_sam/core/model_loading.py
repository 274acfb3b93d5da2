"""Loading SAM checkpoints and reading their geometry.

A checkpoint is a Hugging Face hub id (``facebook/sam-vit-base``) or a local folder written by
``SamModel.save_pretrained``. Weights are read from safetensors only and no remote code is ever run.

Everything the rest of the package needs to know about a checkpoint's input and output sizes is collected in
:class:`ModelGeometry`, read from the checkpoint's ``config.json`` and, when present, its
``preprocessor_config.json``. Nothing here assumes SAM's usual 1024-pixel input.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

#: Checkpoints shipped inside the package, by name (folders under ``napari_sam/models``).
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "models"

#: Checkpoints offered in the model picker, with a short description. Any other hub id or folder works too.
KNOWN_CHECKPOINTS: dict[str, str] = {
    "tiny-cells": "bundled demo model, trained on synthetic cells only (works offline; not a real segmenter)",
    "facebook/sam-vit-base": "SAM ViT-B (Meta), 94 M parameters: the default",
    "facebook/sam-vit-large": "SAM ViT-L (Meta), 312 M parameters",
    "facebook/sam-vit-huge": "SAM ViT-H (Meta), 641 M parameters: best masks, slowest",
    "Zigeng/SlimSAM-uniform-50": "SlimSAM, pruned SAM ViT-B at 50%: faster on CPU",
    "Zigeng/SlimSAM-uniform-77": "SlimSAM, pruned SAM ViT-B at 77%: fastest",
    "wanglab/medsam-vit-base": "MedSAM (medical images), ViT-B",
}

DEFAULT_CHECKPOINT = "facebook/sam-vit-base"

# ImageNet statistics: SAM's defaults when a checkpoint ships no preprocessor config.
_DEFAULT_MEAN = (0.485, 0.456, 0.406)
_DEFAULT_STD = (0.229, 0.224, 0.225)


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message names it and says what to do."""


@dataclass(frozen=True)
class ModelGeometry:
    """Sizes and normalisation of a SAM checkpoint.

    Attributes:
        image_size: side of the square model input, in pixels (1024 for Meta's SAM).
        longest_edge: the image's longest side is resized to this many pixels (usually ``image_size``).
        pad_size: (height, width) the resized image is zero-padded to, bottom and right.
        embedding_size: side of the square image embedding (``image_size // patch_size``).
        mask_size: side of the low-resolution mask logits the decoder returns (4 x ``embedding_size``).
        mean, std: per-channel normalisation of RGB values in [0, 1].
    """

    image_size: int
    longest_edge: int
    pad_size: tuple[int, int]
    embedding_size: int
    mask_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``device``; ``"auto"`` prefers CUDA, then Apple's MPS, then the CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} was asked for, but this torch build sees no CUDA GPU.")
    return resolved


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 much faster than in float32: CUDA GPUs with bf16 support, and
    x86 CPUs with AMX or AVX-512 BF16 instructions (read from ``/proc/cpuinfo``; other systems: no)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | None = None) -> torch.dtype:
    """Return the torch dtype for ``dtype``: None means float32; 'bfloat16'/'float16' are accepted by name;
    'auto' is bfloat16 where ``device`` computes it fast (:func:`fast_bfloat16`), else float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) == "auto":
        return torch.bfloat16 if fast_bfloat16(device or torch.device("cpu")) else torch.float32
    named = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if str(dtype) not in named:
        raise ValueError(f"Unknown dtype {dtype!r}: use one of {sorted(named)}.")
    return named[str(dtype)]


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


def geometry_from_config(config, preprocessor: dict | None = None) -> ModelGeometry:
    """Build a :class:`ModelGeometry` from a ``SamConfig`` and an optional preprocessor-config dict."""
    vision = config.vision_config
    image_size = int(vision.image_size)
    patch_size = int(vision.patch_size)
    embedding_size = image_size // patch_size
    preprocessor = preprocessor or {}
    size = preprocessor.get("size") or {}
    longest_edge = int(size.get("longest_edge", image_size)) if isinstance(size, dict) else image_size
    pad = preprocessor.get("pad_size") or {}
    pad_size = (int(pad.get("height", image_size)), int(pad.get("width", image_size)))
    if longest_edge > min(pad_size) or pad_size != (image_size, image_size):
        raise ModelLoadError(
            f"Inconsistent checkpoint: resize to {longest_edge}, pad to {pad_size}, model input {image_size}."
        )
    mean = tuple(float(v) for v in preprocessor.get("image_mean", _DEFAULT_MEAN))
    std = tuple(float(v) for v in preprocessor.get("image_std", _DEFAULT_STD))
    return ModelGeometry(
        image_size=image_size,
        longest_edge=longest_edge,
        pad_size=pad_size,
        embedding_size=embedding_size,
        mask_size=4 * embedding_size,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
    )


def _read_json(name_or_path: str, filename: str) -> dict | None:
    """A JSON file of the checkpoint (local folder or hub cache) as a dict, or None when it has none."""
    folder = Path(name_or_path)
    if folder.is_dir():
        path = folder / filename
        return json.loads(path.read_text()) if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(name_or_path, filename)).read_text())
    except Exception:  # noqa: BLE001 - a file the checkpoint does not have
        return None


def _read_preprocessor_config(name_or_path: str) -> dict | None:
    """The image processor's settings: ``preprocessor_config.json``, or the ``image_processor`` entry of
    ``processor_config.json`` (as newer transformers versions save them), or None."""
    config = _read_json(name_or_path, "preprocessor_config.json")
    if config is None:
        config = (_read_json(name_or_path, "processor_config.json") or {}).get("image_processor")
    return config


def _load_error(name_or_path: str, error: BaseException) -> ModelLoadError:
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
    """Load a transformers ``SamModel`` checkpoint for inference.

    Args:
        name_or_path: a bundled name (``"tiny-cells"``), a hub id such as ``"facebook/sam-vit-base"``, or a folder
            saved by ``save_pretrained``.
        device: ``"auto"`` (CUDA > MPS > CPU), or any torch device string.
        dtype: weights' dtype; None keeps float32; "auto" is bfloat16 where the device computes it fast.

    Returns:
        ``(model, geometry, device)``: the model in eval mode on ``device``, its :class:`ModelGeometry`, and the
        resolved ``torch.device``.

    Raises:
        ModelLoadError: the checkpoint is missing, unreachable, corrupt, or not a SAM checkpoint.
    """
    from transformers import SamConfig, SamModel

    name, resolved_device, resolved_dtype = resolve_load_arguments(name_or_path, device, dtype, DEFAULT_CHECKPOINT)
    try:
        config = SamConfig.from_pretrained(name)
        if getattr(config, "model_type", None) != "sam":
            raise ModelLoadError(
                f"{name!r} is a {config.model_type!r} checkpoint, not a SAM (model_type 'sam') checkpoint."
            )
        model = SamModel.from_pretrained(name, use_safetensors=True, trust_remote_code=False,
                                         dtype=resolved_dtype)
    except ModelLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        raise _load_error(name, error) from error
    geometry = geometry_from_config(model.config, _read_preprocessor_config(name))
    model.to(resolved_device).eval()
    return model, geometry, resolved_device
