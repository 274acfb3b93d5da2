"""The one place where (row, col) data pixels become SAM's (x, y) model coordinates.

Everywhere else in napari-sam, positions are (row, col) in the image's data pixels, like numpy and napari: a
pixel's centre is at its integer index. SAM's prompt encoder takes (x, y) in the resized image, and shifts by
half a pixel itself, so a data position only needs scaling by the resize factor of each axis and swapping.
"""

from __future__ import annotations

import numpy as np
import torch


def points_to_model(points_rc: np.ndarray, original_size: tuple[int, int],
                    resized_size: tuple[int, int]) -> np.ndarray:
    """Map (..., 2) points from (row, col) data pixels to (x, y) in the resized model input, float32."""
    points_rc = np.asarray(points_rc, dtype=np.float64)
    scale_row = resized_size[0] / original_size[0]
    scale_col = resized_size[1] / original_size[1]
    xy = np.stack([points_rc[..., 1] * scale_col, points_rc[..., 0] * scale_row], axis=-1)
    return xy.astype(np.float32)


def boxes_to_model(boxes_rc: np.ndarray, original_size: tuple[int, int],
                   resized_size: tuple[int, int]) -> np.ndarray:
    """Map (..., 4) boxes (row_min, col_min, row_max, col_max) to SAM's (x_min, y_min, x_max, y_max), float32."""
    boxes_rc = np.asarray(boxes_rc, dtype=np.float64)
    corners = boxes_rc.reshape(*boxes_rc.shape[:-1], 2, 2)
    return points_to_model(corners, original_size, resized_size).reshape(*boxes_rc.shape[:-1], 4)


def boxes_to_xyxy(boxes_rc: np.ndarray) -> np.ndarray:
    """(..., 4) boxes (row_min, col_min, row_max, col_max) as (x_min, y_min, x_max, y_max) in the same pixels."""
    return np.asarray(boxes_rc)[..., [1, 0, 3, 2]]


def boxes_from_normalised(xyxy: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(n, 4) boxes (x_min, y_min, x_max, y_max) in fractions of a frame of ``size`` (H, W), as a detector gives
    them, as (row_min, col_min, row_max, col_max) in that frame's pixels, float32."""
    height, width = size
    pixels = xyxy.detach().float().cpu().numpy().reshape(-1, 4) * np.array([width, height, width, height])
    return pixels[:, [1, 0, 3, 2]].astype(np.float32)


def decoder_inputs(prompts, offset: np.ndarray, frame_size: tuple[int, int], resized_size: tuple[int, int],
                   device, dtype: torch.dtype) -> dict:
    """The mask decoder's keyword inputs for checked ``prompts`` (an ``PromptBatch`` in image pixels) decoded in
    a frame of ``frame_size`` whose top-left pixel is ``offset`` (row, col) of the image: ``input_points``
    (objects, 1, n, 2) and ``input_labels`` (objects, 1, n), each object's own points or the single object's;
    ``input_boxes`` (objects, 1, 4), clipped to the frame; ``input_masks`` (objects, 1, m, m) in ``dtype``.
    Positions are (x, y) in the resized model input."""
    n_objects = prompts.n_objects
    inputs: dict = {}
    if prompts.points is not None and prompts.points.ndim == 3:  # each object's own points
        xy = points_to_model(prompts.points - offset, frame_size, resized_size)
        inputs["input_points"] = torch.tensor(xy, device=device)[:, None]
        inputs["input_labels"] = torch.tensor(prompts.point_labels, device=device)[:, None]
    elif prompts.points is not None:
        xy = points_to_model(prompts.points - offset, frame_size, resized_size)
        inputs["input_points"] = torch.tensor(xy, device=device)[None, None].expand(n_objects, 1, -1, -1)
        inputs["input_labels"] = torch.tensor(prompts.point_labels, device=device)[None, None].expand(
            n_objects, 1, -1)
    if prompts.boxes is not None:
        local = prompts.boxes - np.tile(offset, 2)
        local[:, [0, 2]] = local[:, [0, 2]].clip(0, frame_size[0] - 1)
        local[:, [1, 3]] = local[:, [1, 3]].clip(0, frame_size[1] - 1)
        inputs["input_boxes"] = torch.tensor(boxes_to_model(local, frame_size, resized_size), device=device)[:, None]
    if prompts.mask_input is not None:
        inputs["input_masks"] = torch.tensor(prompts.mask_input, device=device)[:, None].to(dtype)
    return inputs
