"""Propagating one object through a z-stack or time-lapse with a SAM2-family video model (SAM2, EdgeTAM).

The prompted slice is segmented from its prompt, every other one from its image and the model's memory of the
slices already segmented: forward to the last slice, then backward from the prompted one to the first. A direction
stops at the first slice where the object is gone (empty mask, or the model's object score says it is absent).

transformers' video processor needs torchvision, so frames are prepared here in torch as it does: the slice as
napari shows it, in 8-bit levels, resized to the model's square input regardless of aspect ratio (antialiased
bilinear), normalised with the checkpoint's mean/std. A slice is prepared on the model's device only when the model
asks for it, so no copy of the stack is kept, and memories the model can no longer look back to are dropped.

Positions are (row, col) in the slices' data pixels; ``axis`` is the stack axis of ``volume``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F

from .automatic_mask_generator import SegmentationCancelled
from .coordinates import boxes_to_model, points_to_model
from .image_preparation import default_contrast_limits, display_rgb, image_layout
from .model_loading import _DEFAULT_MEAN, _DEFAULT_STD
from .propagation import PropagationResult

#: Checkpoint ``model_type`` -> the transformers video model that runs it. Image-only ``sam2``/``edgetam``
#: checkpoints load into the video model too when they carry its memory weights (:func:`load_video_model` checks).
VIDEO_MODEL_CLASSES = MappingProxyType({
    "sam2_video": "Sam2VideoModel", "sam2": "Sam2VideoModel",
    "edgetam_video": "EdgeTamVideoModel", "edgetam": "EdgeTamVideoModel",
})


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
    mean: tuple[float, float, float] = _DEFAULT_MEAN
    std: tuple[float, float, float] = _DEFAULT_STD


def video_geometry(config, preprocessor: dict | None = None) -> VideoGeometry:
    """The :class:`VideoGeometry` of a video model's ``config``, with mean/std from a preprocessor-config dict."""
    size = config.image_size
    image_size = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    preprocessor = preprocessor or {}
    mean = tuple(float(v) for v in preprocessor.get("image_mean", _DEFAULT_MEAN))
    std = tuple(float(v) for v in preprocessor.get("image_std", _DEFAULT_STD))
    return VideoGeometry(image_size, mean, std)  # type: ignore[arg-type]


def is_video_checkpoint(config_or_path) -> bool:
    """Whether a checkpoint is SAM2-family (for :func:`propagate_video`) rather than SAM-1 (for ``load_sam``).

    Args:
        config_or_path: a transformers config, a ``config.json`` dict, or a bundled name, hub id or folder.
            A checkpoint whose config cannot be read counts as not a video checkpoint.
    """
    config = config_or_path
    if isinstance(config, (str, os.PathLike)):
        from .model_loading import _read_json, resolve_checkpoint

        try:
            config = _read_json(resolve_checkpoint(config), "config.json") or {}
        except (OSError, ValueError):  # unreadable or not JSON
            return False
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return model_type in VIDEO_MODEL_CLASSES


def _preprocessor_config(name: str) -> dict | None:
    """The first of the checkpoint's processor settings that holds ``image_mean``, or None."""
    from .model_loading import _read_json

    processor = _read_json(name, "processor_config.json") or {}
    for candidate in (_read_json(name, "video_preprocessor_config.json"), _read_json(name, "preprocessor_config.json"),
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
    from .model_loading import ModelLoadError, _load_error, resolve_load_arguments

    name, resolved_device, resolved_dtype = resolve_load_arguments(name_or_path, device, dtype,
                                                                   "facebook/sam2.1-hiera-tiny")
    try:
        import transformers

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
        raise _load_error(name, error) from error
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ModelLoadError(f"{name!r} lacks {len(missing)} weights of {type(model).__name__} (e.g. {missing[0]}): "
                             "it is an image-only checkpoint. Use a video one such as facebook/sam2.1-hiera-tiny.")
    model.to(resolved_device).eval()
    return model, video_geometry(model.config, _preprocessor_config(name)), resolved_device


def frame_pixels(image: np.ndarray, geometry: VideoGeometry, contrast_limits: Sequence[float] | None = None,
                 rgb: bool | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A 2D slice as the video model's input frame, as transformers' ``Sam2VideoVideoProcessor`` makes it.

    ``image`` is (H, W), (H, W, 3) or (H, W, 4) of any dtype; ``contrast_limits`` and ``rgb`` as for
    :func:`display_rgb`. Returns a tensor of shape (3, *geometry.image_size) and dtype ``dtype``, on ``device``.
    """
    levels = (display_rgb(image, contrast_limits, rgb, device=device)[None] * 255.0).add_(0.5).floor_()
    resized = F.interpolate(levels, size=geometry.image_size, mode="bilinear", align_corners=False, antialias=True)
    resized = resized.add_(0.5).floor_().clamp_(0.0, 255.0) / 255.0
    mean = torch.tensor(geometry.mean, device=resized.device).view(1, 3, 1, 1)
    std = torch.tensor(geometry.std, device=resized.device).view(1, 3, 1, 1)
    return ((resized - mean) / std)[0].to(dtype)


def _prompt_inputs(points, point_labels, box, original_size: tuple[int, int],
                   image_size: tuple[int, int]) -> dict | None:
    """The session's point inputs: (1, 1, N, 2) (x, y) in the model frame, (1, 1, N) int32 labels (box first).

    (row, col) become (x, y) only through :func:`points_to_model` / :func:`boxes_to_model`, scaled to the square
    input as transformers' ``Sam2VideoProcessor`` does.
    """
    coords, labels = [], []
    if box is not None:
        box = np.asarray(box, dtype=float)
        if box.shape != (4,) or box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"box must be (row_min, col_min, row_max, col_max), got {box.tolist()}.")
        coords.append(boxes_to_model(box[None], original_size, image_size).reshape(2, 2))
        labels += [2, 3]  # SAM's top-left and bottom-right corner labels
    if points is not None and len(points):
        points = np.asarray(points, dtype=float)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"points must have shape (N, 2) (row, col), got {points.shape}.")
        point_labels = np.ones(len(points), int) if point_labels is None else np.asarray(point_labels).ravel()
        if point_labels.shape != (len(points),) or not np.isin(point_labels, (0, 1)).all():
            raise ValueError(f"point_labels must be {len(points)} values of 1 (object) or 0 (background).")
        coords.append(points_to_model(points, original_size, image_size))
        labels += point_labels.astype(int).tolist()
    if not coords:
        return None
    return {"point_coords": torch.from_numpy(np.concatenate(coords).astype(np.float32))[None, None],
            "point_labels": torch.tensor(labels, dtype=torch.int32)[None, None]}


def _session_class(model) -> type:
    """The inference-session class of ``model``'s family (``Sam2VideoModel`` -> ``Sam2VideoInferenceSession``)."""
    for cls in type(model).__mro__:
        module = sys.modules.get(cls.__module__) or importlib.import_module(cls.__module__)
        session = getattr(module, cls.__name__.replace("Model", "InferenceSession"), None)
        if isinstance(session, type):
            return session
    raise TypeError(f"{type(model).__name__} is not a SAM2-family video model (e.g. Sam2VideoModel).")


def propagate_video(model, volume, start_index: int, axis: int, *, points=None, point_labels=None, box=None,
                    mask: np.ndarray | None = None, geometry: VideoGeometry | None = None, contrast_limits=None,
                    rgb: bool | None = None, score_threshold: float = 0.5, min_area: int = 1,
                    directions: tuple[int, ...] = (1, -1), progress: Callable[[int, int], None] | None = None,
                    cancel: Callable[[], bool] | None = None,
                    on_slice: Callable[[int, np.ndarray, float], None] | None = None) -> PropagationResult:
    """Segment the object prompted on slice ``start_index`` and track it through ``volume`` along ``axis``.

    Args:
        model: a SAM2-family video model (``Sam2VideoModel``, ``EdgeTamVideoModel``) in eval mode; it runs on its
            own device, in its own dtype.
        volume: (..., H, W[, C]) array whose ``axis`` runs through the slices (z or t); each slice must be a 2D
            gray, RGB or RGBA image. Only the slice being segmented is read and prepared at a time.
        start_index: the prompted slice.
        axis: the stack axis of ``volume``.
        points: (N, 2) (row, col) clicks on the start slice; point_labels: (N,) 1 = object, 0 = background
            (default all 1).
        box: (row_min, col_min, row_max, col_max) on the start slice, alone or with points.
        mask: (H, W) bool, the object on the start slice (instead of points and box); it is kept as that
            slice's result.
        geometry: the checkpoint's :class:`VideoGeometry` (from :func:`load_video_model`); None: the model
            config's input size with ImageNet mean/std.
        contrast_limits, rgb: as for :func:`display_rgb`; the same limits serve every slice (None: the defaults
            over the whole volume).
        score_threshold: stop when the object score (sigmoid of the model's object-score logit) falls below it.
        min_area: stop at a slice whose mask has fewer pixels.
        directions: 1 towards higher slice indices, -1 towards lower ones; both (forward first) by default.
        progress: ``progress(done, total)`` after each slice; cancel: checked before each slice, returning True
            raises :class:`SegmentationCancelled`; on_slice: ``on_slice(index, mask, score)`` for each slice kept,
            in processing order (start, forward, then backward).

    Returns :class:`PropagationResult` (slices first whatever ``axis``); its scores are object scores in [0, 1].
    Raises ValueError for ``start_index`` outside the stack, no prompt, a mask with points or box, bad shapes
    or ``directions``.
    """
    slices = np.moveaxis(volume, axis, 0)
    n_slices = slices.shape[0]
    if not 0 <= start_index < n_slices:
        raise ValueError(f"start_index {start_index} is outside the {n_slices} slices.")
    if not directions or set(directions) - {-1, 1}:
        raise ValueError(f"directions must be 1, -1 or both, not {directions!r}.")
    steps = [step for step in (1, -1) if step in directions]
    total = 1 + sum(n_slices - 1 - start_index if step > 0 else start_index for step in steps)
    has_channels = image_layout(np.asarray(slices[start_index]), rgb)
    original_size = tuple(int(s) for s in slices.shape[1:3])
    geometry = geometry or video_geometry(model.config)
    prompt = _prompt_inputs(points, point_labels, box, original_size, geometry.image_size)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if prompt is not None:
            raise ValueError("Give either a mask or points/box as the prompt, not both.")
        if mask.shape != original_size:
            raise ValueError(f"mask has shape {mask.shape}, the slices {original_size}.")
        if not mask.any():
            raise ValueError("The mask prompt is empty: segment the object first.")
    elif prompt is None:
        raise ValueError("No prompt: give points, a box or a mask of the object on the start slice.")
    if contrast_limits is None:
        contrast_limits = default_contrast_limits(np.asarray(slices), has_channels)
    device, dtype = model.device, model.dtype

    def prepared(index: int) -> torch.Tensor:
        return frame_pixels(np.asarray(slices[index]), geometry, contrast_limits, has_channels, device, dtype)

    class VolumeSession(_session_class(model)):
        """An inference session whose frames are prepared when the model asks for them, never stored."""

        num_frames = property(lambda self: n_slices)

        def get_frame(self, frame_idx: int) -> torch.Tensor:
            return prepared(frame_idx)

    session = VolumeSession(video_height=original_size[0], video_width=original_size[1], inference_device=device,
                            inference_state_device=device, video_storage_device="cpu", dtype=dtype)
    obj_idx = session.obj_id_to_idx(1)
    if mask is not None:
        resized = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=geometry.image_size,
                                mode="bilinear", align_corners=False, antialias=True)
        session.add_mask_inputs(obj_idx, start_index, (resized >= 0.5).float())
    else:
        session.add_point_inputs(obj_idx, start_index, prompt)
    session.obj_with_new_inputs = [1]
    config = model.config
    lookback = max(getattr(config, "num_maskmem", n_slices), getattr(config, "max_object_pointers_in_encoder", 0))
    outputs = session.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"]

    masks = np.zeros((n_slices, *original_size), dtype=bool)
    scores = np.full(n_slices, np.nan, dtype=np.float32)
    bounds, done = [start_index, start_index], 0

    def segment(index: int, step: int) -> tuple[np.ndarray, float]:
        nonlocal done
        if cancel is not None and cancel():
            raise SegmentationCancelled()
        output = model(session, frame_idx=index, reverse=step < 0)
        logits = F.interpolate(output.pred_masks[:1, :1].float(), size=original_size, mode="bilinear",
                               align_corners=False)
        done += 1
        if progress is not None:
            progress(done, total)
        # Forget a slice once the model no longer looks back to it; those near the start serve the reverse pass.
        stale = index - step * lookback
        if abs(stale - start_index) > lookback:
            outputs.pop(stale, None)
        return (logits[0, 0] > 0).cpu().numpy(), float(torch.sigmoid(output.object_score_logits.float()).flatten()[0])

    def keep(index: int, found: np.ndarray, score: float) -> None:
        masks[index], scores[index] = found, score
        if on_slice is not None:
            on_slice(index, found, score)

    with torch.inference_mode():
        found, score = segment(start_index, 0)
        keep(start_index, found if mask is None else mask, score)  # kept whatever its score
        for step in steps if masks[start_index].any() else ():
            index = start_index + step
            while 0 <= index < n_slices:
                found, score = segment(index, step)
                if found.sum() < min_area or score < score_threshold:
                    break
                keep(index, found, score)
                bounds[0 if step < 0 else 1] = index
                index += step
    if progress is not None:
        progress(total, total)
    return PropagationResult(masks=masks, scores=scores, start=bounds[0], stop=bounds[1])
