"""RoIAlign in torch, with ``torchvision.ops.roi_align``'s sampling rules (SAM3's exemplar-box encoder calls it, and
napari-sam does not use torchvision).

For each box (x1, y1, x2, y2), scaled by ``spatial_scale`` and shifted by half a pixel when ``aligned``, each of the
``output_size`` bins averages the bilinear samples of a regular grid inside it: ``sampling_ratio`` samples per side,
or (when it is not positive) ``ceil(box side / output side)`` of them. Without ``aligned`` a box is at least one
feature pixel wide and high. A sample farther than one pixel outside the feature map counts as 0; one within that
pixel is clamped to the border, as the reference kernel does.
"""

from __future__ import annotations

import math

import torch


def _bilinear(feature: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Samples of ``feature`` (C, H, W) at rows ``y`` (n,) and columns ``x`` (m,): (C, n, m)."""
    height, width = feature.shape[-2:]
    outside_y = (y < -1.0) | (y > height)
    outside_x = (x < -1.0) | (x > width)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y_low, x_low = y.floor().long(), x.floor().long()
    y_top, x_top = y_low >= height - 1, x_low >= width - 1
    y_low, x_low = y_low.clamp(max=height - 1), x_low.clamp(max=width - 1)
    y = torch.where(y_top, y_low.to(y.dtype), y)
    x = torch.where(x_top, x_low.to(x.dtype), x)
    y_high = torch.where(y_top, y_low, y_low + 1)
    x_high = torch.where(x_top, x_low, x_low + 1)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    rows_low, rows_high = feature[:, y_low], feature[:, y_high]  # (C, n, W)
    value = (hy[:, None] * hx[None] * rows_low[:, :, x_low] + hy[:, None] * lx[None] * rows_low[:, :, x_high]
             + ly[:, None] * hx[None] * rows_high[:, :, x_low] + ly[:, None] * lx[None] * rows_high[:, :, x_high])
    return value * (~outside_y[:, None] & ~outside_x[None]).to(value.dtype)


def roi_align(input: torch.Tensor, boxes, output_size, spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> torch.Tensor:
    """Pool ``input`` (B, C, H, W) over boxes: a list of B tensors (K_b, 4) of (x1, y1, x2, y2), or one (K, 5)
    tensor whose first column is the batch index. Returns (sum K, C, out_h, out_w), in the boxes' order."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if isinstance(boxes, torch.Tensor):
        rows = [(int(row[0]), row[1:]) for row in boxes]
    else:
        rows = [(batch, box) for batch, per_image in enumerate(boxes) for box in per_image]
    offset = 0.5 if aligned else 0.0
    pooled = []
    for batch, box in rows:
        feature = input[batch].float()
        x1, y1, x2, y2 = (float(v) * spatial_scale - offset for v in box)
        width, height = x2 - x1, y2 - y1
        if not aligned:
            width, height = max(width, 1.0), max(height, 1.0)
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(height / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(width / out_w)
        count = max(grid_h * grid_w, 1)
        bin_h, bin_w = height / out_h, width / out_w
        ys = y1 + (torch.arange(out_h * grid_h, dtype=torch.float64) + 0.5) * (bin_h / grid_h)
        xs = x1 + (torch.arange(out_w * grid_w, dtype=torch.float64) + 0.5) * (bin_w / grid_w)
        samples = _bilinear(feature, ys.float().to(feature.device), xs.float().to(feature.device))
        samples = samples.view(feature.shape[0], out_h, grid_h, out_w, grid_w)
        pooled.append(samples.sum(dim=(2, 4)) / count)
    if not pooled:
        return input.new_zeros((0, input.shape[1], out_h, out_w))
    return torch.stack(pooled).to(input.dtype)
