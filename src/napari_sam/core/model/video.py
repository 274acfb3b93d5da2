"""SAM2-family video checkpoints (SAM2, EdgeTAM, SAM3's tracker): which ones propagation offers, their input
geometry, and loading them (safetensors only, no remote code)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch

from ..errors import ModelLoadError
from .loading import (
    LOADING_LOCK,
    check_loading_info,
    load_error,
    read_checkpoint_json,
    require_config,
    resolve_checkpoint,
    resolve_load_arguments,
)
from .processor_config import IMAGENET_MEAN, IMAGENET_STD, per_channel

#: Checkpoint ``model_type`` -> the transformers video model that runs it. Image-only ``sam2``/``edgetam``
#: checkpoints load into the video model too when they carry its memory weights (:func:`load_video_model` checks).
VIDEO_MODEL_CLASSES = MappingProxyType({
    "sam2_video": "Sam2VideoModel", "sam2": "Sam2VideoModel",
    "edgetam_video": "EdgeTamVideoModel", "edgetam": "EdgeTamVideoModel",
    "sam3_tracker_video": "Sam3TrackerVideoModel", "sam3_tracker": "Sam3TrackerVideoModel",
})
#: Model types whose frames are normalised with mean = std = 0.5 when the checkpoint says nothing (SAM3).
HALF_NORMALISED = ("sam3_tracker_video", "sam3_tracker")


#: SAM2-family video checkpoints offered for propagation, with a short description. Any other works too.
VIDEO_CHECKPOINTS = MappingProxyType({
    "facebook/sam2.1-hiera-tiny": "SAM 2.1 Hiera-T (Meta), 39 M parameters: fastest SAM2",
    "facebook/sam2.1-hiera-small": "SAM 2.1 Hiera-S (Meta), 46 M parameters",
    "facebook/sam2.1-hiera-base-plus": "SAM 2.1 Hiera-B+ (Meta), 81 M parameters",
    "facebook/sam2.1-hiera-large": "SAM 2.1 Hiera-L (Meta), 224 M parameters: best, slowest",
    "yonigozlan/EdgeTAM-hf": "EdgeTAM (Meta), a SAM2 for small devices",
})


@dataclass(frozen=True)
class VideoGeometry:
    """Input size and normalisation of a SAM2-family video checkpoint.

    Attributes:
        image_size: (height, width) every frame is resized to, aspect ratio not kept (SAM2: 1024 x 1024).
        mean, std: per-channel normalisation of RGB values in [0, 1].
    """

    image_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def video_geometry(config, preprocessor: dict | None = None, source: str = "the preprocessor config") -> VideoGeometry:
    """The :class:`VideoGeometry` of a video model's ``config``, with mean/std from a preprocessor-config dict
    (default: ImageNet's; SAM3's tracker: 0.5).

    Raises:
        ModelLoadError: a mean or standard deviation that is not one number or three (standard deviations above
            0), naming ``source``.
    """
    size = config.image_size
    image_size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    preprocessor = preprocessor or {}
    half = getattr(config, "model_type", "") in HALF_NORMALISED
    mean = per_channel(preprocessor.get("image_mean", (0.5,) * 3 if half else IMAGENET_MEAN), "image_mean", source)
    std = per_channel(preprocessor.get("image_std", (0.5,) * 3 if half else IMAGENET_STD), "image_std", source,
                      positive=True)
    return VideoGeometry(image_size, mean, std)


def is_video_checkpoint(config_or_path) -> bool:
    """Whether a checkpoint runs in a SAM2-family video model (for ``propagate_video``): a video checkpoint, or an
    image checkpoint of a family that has one (``sam2``, ``edgetam``, ``sam3_tracker``; :data:`VIDEO_MODEL_CLASSES`).
    ``load_sam`` loads the image part of those too.

    Args:
        config_or_path: a transformers config, a ``config.json`` dict, or a bundled name, hub id or folder.
            A checkpoint whose config cannot be read counts as not a video checkpoint.
    """
    config = config_or_path
    if isinstance(config, (str, os.PathLike)):
        try:
            config = read_checkpoint_json(resolve_checkpoint(config), "config.json") or {}
        except (OSError, ValueError):  # unreadable or not JSON
            return False
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return model_type in VIDEO_MODEL_CLASSES


def _preprocessor_config(name: str) -> dict | None:
    """The first of the checkpoint's processor settings that holds ``image_mean``, or None."""
    processor = read_checkpoint_json(name, "processor_config.json") or {}
    for candidate in (read_checkpoint_json(name, "video_preprocessor_config.json"),
                      read_checkpoint_json(name, "preprocessor_config.json"),
                      processor.get("video_processor"), processor.get("image_processor")):
        if isinstance(candidate, dict) and "image_mean" in candidate:
            return candidate
    return None


def load_video_model(name_or_path: str | os.PathLike, device: str | torch.device | None = "auto",
                     dtype: str | torch.dtype | None = None):
    """Load a SAM2-family video checkpoint (safetensors only, no remote code) for :func:`propagate_video`.

    Args:
        name_or_path: a hub id such as ``"facebook/sam2.1-hiera-tiny"`` or a folder saved by ``save_pretrained``.
        device: ``"auto"`` (CUDA > MPS > CPU), or any torch device string.
        dtype: weights' dtype; None keeps float32.

    Returns ``(model, geometry, device)``: the model in eval mode on ``device``, its :class:`VideoGeometry`
    and the resolved ``torch.device``. Raises ModelLoadError when the checkpoint is missing or unreadable, not
    SAM2-family, or lacks the video weights.
    """
    name, resolved_device, resolved_dtype = resolve_load_arguments(name_or_path, device, dtype,
                                                                   "facebook/sam2.1-hiera-tiny")
    require_config(name, "video checkpoint")
    try:
        import transformers

        with LOADING_LOCK:
            model_type = transformers.AutoConfig.from_pretrained(name, trust_remote_code=False).model_type
            if model_type not in VIDEO_MODEL_CLASSES:
                raise ModelLoadError(f"{name!r} is a {model_type!r} checkpoint, not a SAM2-family video checkpoint "
                                     f"(model_type one of {sorted(VIDEO_MODEL_CLASSES)}).")
            model_class = getattr(transformers, VIDEO_MODEL_CLASSES[model_type])
            model, info = model_class.from_pretrained(name, use_safetensors=True, trust_remote_code=False,
                                                      dtype=resolved_dtype, output_loading_info=True)
    except ModelLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        raise load_error(name, error) from error
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ModelLoadError(f"{name!r} lacks {len(missing)} weights of {type(model).__name__} (e.g. {missing[0]}): "
                             "it is an image-only checkpoint. Use a video one such as facebook/sam2.1-hiera-tiny.")
    check_loading_info(name, model, info)  # unexpected or mis-shaped weights
    model.to(resolved_device).eval()
    return model, video_geometry(model.config, _preprocessor_config(name), f"{name}'s preprocessor config"), \
        resolved_device


