"""Boxes of objects, in torch on any device (no torchvision): areas, IoUs, non-maximum suppression, the boxes of
masks, and Meta's rule for boxes cut by a crop's edge.

Boxes are (row_min, col_min, row_max, col_max) in data pixels, inclusive.
"""

from __future__ import annotations

import numpy as np
import torch


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(n, H, W) bool -> (n, 4) inclusive (row_min, col_min, row_max, col_max); empty masks give zeros."""
    if masks.numel() == 0:
        return torch.zeros((*masks.shape[:-2], 4), dtype=torch.float32, device=masks.device)
    height, width = masks.shape[-2:]
    any_row, any_col = masks.any(dim=-1), masks.any(dim=-2)
    rows = torch.arange(height, device=masks.device)
    cols = torch.arange(width, device=masks.device)
    row_max = torch.where(any_row, rows, -1).amax(dim=-1)
    row_min = torch.where(any_row, rows, height).amin(dim=-1)
    col_max = torch.where(any_col, cols, -1).amax(dim=-1)
    col_min = torch.where(any_col, cols, width).amin(dim=-1)
    boxes = torch.stack([row_min, col_min, row_max, col_max], dim=-1).float()
    empty = (row_max < row_min) | (col_max < col_min)
    return torch.where(empty[..., None], torch.zeros_like(boxes), boxes)


def box_near_crop_edge(boxes: torch.Tensor, crop_box, image_box, atol: float = 20.0) -> torch.Tensor:
    """(n,) bool: boxes (in image coordinates) that touch the crop's edge where it is not the image's edge.

    ``crop_box`` and ``image_box`` are end-exclusive (row0, col0, row1, col1), as Meta compares them."""
    crop = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    image = torch.as_tensor(image_box, dtype=torch.float32, device=boxes.device)
    near_crop = torch.isclose(boxes, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, image[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(n, m) IoU of ``boxes`` (n, 4) with ``others`` (m, 4), as torchvision's ``box_iou`` (no +1 on sides)."""
    low = torch.maximum(boxes[:, None, :2], others[None, :, :2])
    high = torch.minimum(boxes[:, None, 2:], others[None, :, 2:])
    overlap = (high - low).clamp(min=0).prod(dim=-1)
    return overlap / (box_area(boxes)[:, None] + box_area(others)[None, :] - overlap).clamp(min=1e-12)


#: IoU entries computed at once by :func:`nms`: its memory stays about 100 MiB whatever the number of boxes
#: (tiled segment everything on a large image has tens of thousands).
NMS_BLOCK = 1 << 22


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, as torchvision's ``nms``: indices kept, by decreasing score.

    The IoU matrix is computed in blocks of rows, each against the boxes after it, on the boxes' device; the
    greedy pass walks each block on the CPU. Memory is bounded by :data:`NMS_BLOCK` entries.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    ranked = boxes[order].float()
    count = len(ranked)
    suppressed = np.zeros(count, dtype=bool)
    kept = []
    rows = max(1, NMS_BLOCK // count)
    for start in range(0, count, rows):
        stop = min(count, start + rows)
        if suppressed[start:stop].all():
            continue
        overlaps = (box_iou(ranked[start:stop], ranked[start:]) > threshold).cpu().numpy()
        for index in range(start, stop):
            if not suppressed[index]:
                kept.append(index)
                suppressed[start:] |= overlaps[index - start]
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]
