"""Propagating objects through a z-stack or time-lapse with a SAM2-family video model (SAM2, EdgeTAM, SAM3's
tracker): one object prompted on a slice, or every object of a labels plane at once in the model's multi-object memory.

The prompted slice is segmented from its prompt, every other one from its image and the model's memory of the
slices already segmented: forward to the last slice, then backward from the prompted one to the first. The order,
the stop rules (object score, overlap with the previous slice, area), progress and cancelling are
:func:`~napari_sam.core.workflows.propagation.driver.drive`'s, shared with SAM-1 propagation; :class:`VideoStepper`
is how a video model segments one slice.

transformers' video processor needs torchvision, so each slice's model input is prepared here in torch as it does:
the slice as napari shows it, in 8-bit levels, resized to the model's square input regardless of aspect ratio
(antialiased bilinear), normalised with the checkpoint's mean/std. A slice is prepared on the model's device only when
the model asks for it, so no copy of the stack is kept, and memories the model can no longer look back to are dropped.

Positions are (row, col) in the slices' data pixels; ``axis`` is the stack axis of ``volume``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...decoding import PromptBatch, check_prompts
from ...decoding.coordinates import boxes_to_model, points_to_model
from ...image import display_rgb, normalised, rounded_levels
from ...model import VideoGeometry, video_geometry
from ...settings import PropagationSettings
from .driver import (
    PropagatedObjects,
    PropagationResult,
    Run,
    Segmented,
    first_masks,
    prepare_run,
    propagate_many,
    propagate_one,
)


def slice_input(image: np.ndarray, geometry: VideoGeometry, contrast_limits: Sequence[float] | None = None,
                 rgb: bool | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A 2D slice as the video model's input, as transformers' ``Sam2VideoVideoProcessor`` makes a video frame.

    ``image`` is (H, W), (H, W, 3) or (H, W, 4) of any dtype; ``contrast_limits`` and ``rgb`` as for
    :func:`display_rgb`. Returns a tensor of shape (3, *geometry.image_size) and dtype ``dtype``, on ``device``.
    """
    levels = rounded_levels(display_rgb(image, contrast_limits, rgb, device=device)[None] * 255.0)
    resized = F.interpolate(levels, size=geometry.image_size, mode="bilinear", align_corners=False, antialias=True)
    return normalised(rounded_levels(resized) / 255.0, geometry.mean, geometry.std)[0].to(dtype)


def _prompt_inputs(prompts: PromptBatch, original_size: tuple[int, int], image_size: tuple[int, int]) -> dict:
    """The session's point inputs from checked prompts: (1, 1, N, 2) float32 (x, y) in the model input and
    (1, 1, N) int32 labels, the box's corners (labels 2, 3) first.

    (row, col) become (x, y) only through :func:`points_to_model` / :func:`boxes_to_model`, scaled to the square
    input as transformers' ``Sam2VideoProcessor`` does.
    """
    coords, labels = [], []
    if prompts.boxes is not None:
        coords.append(boxes_to_model(prompts.boxes, original_size, image_size).reshape(2, 2))
        labels += [2, 3]  # SAM's top-left and bottom-right corner labels
    if prompts.points is not None and prompts.point_labels is not None:
        coords.append(points_to_model(prompts.points, original_size, image_size))
        labels += prompts.point_labels.tolist()
    return {"point_coords": torch.from_numpy(np.concatenate(coords).astype(np.float32))[None, None],
            "point_labels": torch.tensor(labels, dtype=torch.int32)[None, None]}


def _check_prompt(points, point_labels, box, mask, size: tuple[int, int]) -> PromptBatch | np.ndarray:
    """The start slice's prompt for slices of ``size`` (H, W): checked :class:`PromptBatch` (points and the box
    checked, and the box clipped, as :meth:`Predictor.predict` does, by :func:`check_prompts`), or the (H, W) bool
    mask."""
    has_points = points is not None and np.size(points) > 0
    has_box = box is not None and np.size(box) > 0
    if mask is not None:
        if has_points or has_box:
            raise ValueError("Give either a mask or points/box as the prompt, not both.")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != size:
            raise ValueError(f"mask has shape {mask.shape}, the slices {size}.")
        if not mask.any():
            raise ValueError("The mask prompt is empty: segment the object first.")
        return mask
    if not has_points and not has_box:
        raise ValueError("No prompt: give points, a box or a mask of the object on the start slice.")
    prompts = check_prompts(points if has_points else None, point_labels, box if has_box else None, None, size)
    if prompts.boxes is not None and len(prompts.boxes) != 1:
        raise ValueError(f"box must be one (row_min, col_min, row_max, col_max), got {len(prompts.boxes)} boxes.")
    return prompts


def _session_class(model) -> type:
    """The inference-session class of ``model``'s family (``Sam2VideoModel`` -> ``Sam2VideoInferenceSession``)."""
    for cls in type(model).__mro__:
        module = sys.modules.get(cls.__module__) or importlib.import_module(cls.__module__)
        session = getattr(module, cls.__name__.replace("Model", "InferenceSession"), None)
        if isinstance(session, type):
            return session
    raise TypeError(f"{type(model).__name__} is not a SAM2-family video model (e.g. Sam2VideoModel).")


class VideoStepper:
    """Segments each slice with a SAM2-family video model and its memory of the slices already segmented.

    Every object of ``prompts`` (by id: a checked :class:`PromptBatch`, or an (H, W) bool mask that is kept as the
    start slice's result) is tracked in one inference session, the model's multi-object memory: each slice's image
    is encoded once for all of them. The start slice is segmented from the prompts; every other slice from its image
    and the memory, with ``reverse`` for the backward direction. Frames are prepared when the model asks for them,
    from the plane the driver hands over, and memories the model can no longer look back to are dropped (those near
    the start slice serve the backward direction).
    """

    def __init__(self, model, geometry: VideoGeometry, prompts: dict[int, PromptBatch | np.ndarray], run: Run):
        self.model, self.geometry, self.run = model, geometry, run
        self.masks = {object_id: prompt for object_id, prompt in prompts.items() if isinstance(prompt, np.ndarray)}
        self._plane: tuple[int, np.ndarray] | None = None
        stepper, size, n_slices = self, run.stack.size, run.stack.n_slices
        device, dtype = model.device, model.dtype

        class VolumeSession(_session_class(model)):  # type: ignore[misc]  # the model's own session class
            """An inference session whose slices (its video frames) are prepared when the model asks for them, never
            stored."""

            num_frames = property(lambda self: n_slices)

            def get_frame(self, frame_idx: int) -> torch.Tensor:
                return stepper._input(frame_idx)

        self.session = VolumeSession(video_height=size[0], video_width=size[1], inference_device=device,
                                     inference_state_device=device, video_storage_device="cpu", dtype=dtype)
        for object_id, prompt in prompts.items():
            obj_idx = self.session.obj_id_to_idx(object_id)
            if isinstance(prompt, np.ndarray):
                resized = F.interpolate(torch.from_numpy(prompt)[None, None].float(), size=geometry.image_size,
                                        mode="bilinear", align_corners=False, antialias=True)
                self.session.add_mask_inputs(obj_idx, run.start_index, (resized >= 0.5).float())
            else:
                self.session.add_point_inputs(obj_idx, run.start_index,
                                              _prompt_inputs(prompt, size, geometry.image_size))
        self.session.obj_with_new_inputs = list(prompts)
        config = model.config
        self.lookback = max(getattr(config, "num_maskmem", n_slices),
                            getattr(config, "max_object_pointers_in_encoder", 0))
        self.outputs = [self.session.output_dict_per_obj[self.session.obj_id_to_idx(object_id)]
                        ["non_cond_frame_outputs"] for object_id in prompts]

    def _input(self, index: int) -> torch.Tensor:
        """Slice ``index`` as the model's input (3, *image_size) on the model's device, in its dtype."""
        plane = self._plane[1] if self._plane is not None and self._plane[0] == index else self.run.stack.plane(index)
        return slice_input(plane, self.geometry, self.run.contrast_limits, self.run.has_channels, self.model.device,
                            self.model.dtype)

    def segment(self, index: int, plane: np.ndarray, step: int,
                previous: dict[int, Segmented] | None) -> dict[int, Segmented]:
        """Every object of the session is segmented (the model's memory of each needs every slice); those of
        ``previous`` (all on the start slice) are returned."""
        self._plane = (index, plane)
        try:
            with torch.inference_mode():
                output = self.model(self.session, frame_idx=index, reverse=step < 0)
                logits = F.interpolate(output.pred_masks[:, :1].float(), size=self.run.stack.size, mode="bilinear",
                                       align_corners=False)
                scores = torch.sigmoid(output.object_score_logits.float()).reshape(-1).tolist()
                found = (logits[:, 0] > 0).cpu().numpy()
        finally:
            self._plane = None
        stale = index - step * self.lookback  # forget a slice once the model no longer looks back to it
        if abs(stale - self.run.start_index) > self.lookback:
            for outputs in self.outputs:
                outputs.pop(stale, None)
        wanted = output.object_ids if previous is None else previous
        return {object_id: Segmented(self.masks[object_id] if previous is None and object_id in self.masks
                                     else found[row], scores[row])
                for row, object_id in enumerate(output.object_ids) if object_id in wanted}


def propagate_video(model, volume, start_index: int, axis: int, *, points=None, point_labels=None, box=None,
                    mask: np.ndarray | None = None, geometry: VideoGeometry | None = None,
                    settings: PropagationSettings | None = None, contrast_limits=None, rgb: bool | None = None,
                    directions: tuple[int, ...] = (1, -1), bounds: tuple[int | None, int | None] | None = None,
                    progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
                    on_slice: Callable[[int, np.ndarray, float], None] | None = None,
                    **overrides) -> PropagationResult:
    """Segment the object prompted on slice ``start_index`` and track it through ``volume`` along ``axis``.

    Order: the start slice, then forward (+1) to the last slice, then backward (-1) from the start slice. Each
    direction stops at the first slice whose mask is empty, whose object score is below ``score_threshold``, whose
    IoU with the previous slice's mask is below ``iou_threshold``, whose area is below ``min_area``, whose area grows
    again after narrowing (``max_regrowth``) or whose centre jumps (``max_shift``); the start slice is kept whatever
    its score and size, and an object absent from it is not propagated.

    Args:
        model: a SAM2-family video model (``Sam2VideoModel``, ``EdgeTamVideoModel``) in eval mode; it runs on its
            own device, in its own dtype.
        volume: (..., H, W[, C]) array-like (numpy, dask, zarr: anything with ``shape`` and ``__getitem__``) whose
            ``axis`` runs through the slices (z or t); each slice must be one 2D gray, RGB or RGBA image. Only the
            slice being segmented is read and prepared at a time.
        start_index: the prompted slice (an integer).
        axis: the stack axis of ``volume`` (negative counts from the end).
        points: (N, 2) (row, col) clicks on the start slice; point_labels: (N,) 1 = object, 0 = background
            (default all 1).
        box: (row_min, col_min, row_max, col_max) on the start slice, alone or with points (clipped to the image).
        mask: (H, W) bool, the object on the start slice (instead of points and box); it is kept as that
            slice's result.
        geometry: the checkpoint's :class:`VideoGeometry` (from :func:`load_video_model`); None: the model
            config's input size with ImageNet mean/std.
        settings: :class:`PropagationSettings` (None: the defaults); ``overrides`` are its field names applied on
            top (``n_points``, ``zoom`` and ``use_mask_input`` concern SAM-1 only).
        contrast_limits, rgb: as for :func:`display_rgb`; the same limits serve every slice (None: the start
            slice's defaults).
        directions: 1 towards higher slice indices, -1 towards lower ones; both (forward first) by default.
        bounds: (first, last): the slices the object may reach (either may be None: the stack's end); they must
            hold ``start_index``.
        progress: ``progress(done, total)`` after each slice; cancel: checked before each slice, returning True
            raises :class:`~napari_sam.core.errors.SegmentationCancelled`; on_slice: ``on_slice(index, mask,
            score)`` for each slice kept, in processing order.

    Returns :class:`PropagationResult` (slices first whatever ``axis``); its scores are object scores in [0, 1].
    Raises ValueError for bad arguments (no prompt, a mask with points or box, points or boxes as
    :meth:`Predictor.predict` rejects them, bad shapes, indices, limits or settings), naming the problem.
    """
    run = prepare_run(volume, start_index, axis, contrast_limits=contrast_limits, rgb=rgb, directions=directions,
                      settings=settings, overrides=overrides)
    prompt = _check_prompt(points, point_labels, box, mask, run.stack.size)
    stepper = VideoStepper(model, geometry or video_geometry(model.config), {1: prompt}, run)
    return propagate_one(stepper, run, bounds, progress, cancel, on_slice)


def propagate_video_objects(model, volume, start_index: int, axis: int, labels_plane, *, ids=None,
                            geometry: VideoGeometry | None = None, settings: PropagationSettings | None = None,
                            contrast_limits=None, rgb: bool | None = None, directions: tuple[int, ...] = (1, -1),
                            bounds: dict | None = None, progress: Callable[[int, int], None] | None = None,
                            cancel: Callable[[], bool] | None = None, **overrides) -> PropagatedObjects:
    """Track every object of ``labels_plane`` (the labels of slice ``start_index``) through ``volume`` at once with
    a SAM2-family video model's multi-object memory.

    Each slice is encoded once for all the objects; each object keeps its id, its mask as the start slice's result
    and its own stop rules (as :func:`propagate_video`'s), and no pixel is given to two objects (a contested pixel
    goes to the object that held it on the previous slice, else to the higher object score).

    ``model``, ``volume``, ``start_index``, ``axis``, ``geometry``, ``settings``, ``contrast_limits``, ``rgb``,
    ``directions``, ``progress``, ``cancel`` and ``overrides`` are as for :func:`propagate_video`.

    Args:
        labels_plane: (H, W) integer labels of the start slice; each id > 0 is an object.
        ids: the objects to carry (default: every object of ``labels_plane``).
        bounds: by object id, (first, last) slices that object may reach, as :func:`propagate_video`'s ``bounds``.

    Returns :class:`PropagatedObjects` (slices first whatever ``axis``). Raises ValueError for bad arguments, naming
    the problem.
    """
    run = prepare_run(volume, start_index, axis, contrast_limits=contrast_limits, rgb=rgb, directions=directions,
                      settings=settings, overrides=overrides)
    masks = first_masks(labels_plane, run.stack.size, ids)
    stepper = VideoStepper(model, geometry or video_geometry(model.config), dict(masks), run)
    return propagate_many(stepper, run, list(masks), bounds, progress, cancel)
