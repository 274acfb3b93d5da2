"""Pillow's ``Image.resize`` of 8-bit images, reproduced in torch (no PIL at run time).

transformers' reference SAM processor resizes with Pillow. Pillow resamples one axis at a time with a filter of
support ``filter_support * max(scale, 1)``: for each output sample it computes the filter's weights in double
precision, normalises them to sum 1, turns them into 22-bit fixed-point integers, and sums integer products, then
rounds half up and clips to 0..255 after each pass. This module does the same arithmetic, so results are
identical to Pillow's, level for level:

- the weights are computed in numpy float64 as Pillow computes them (same formulas, same summation order) and
  cached per (input size, output size, filter);
- each pass sums ``level * weight`` in int32 on the tensor's device (products and sums fit, as in Pillow's
  ``int`` accumulators), then ``floor((sum + 2**21) / 2**22)`` clipped to 0..255;
- the order of the two passes is Pillow 13's (the version constraints.txt pins; the rule was measured against it):
  rows first when the image loses rows and ``rows lost > 2 x columns lost``, else columns first. Pillow 12 and
  older always resample columns first; the two orders differ by rounding only;
- NEAREST (0) picks ``floor((i + 0.5) * scale)`` with the positions accumulated in float64 as Pillow's affine
  scaler does.

Images are (channels, rows, cols) throughout; sizes are (height, width).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch

#: PIL filter ids (``PIL.Image.Resampling``) that are reproduced, by name.
PIL_FILTERS = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}

_PRECISION_BITS = 32 - 8 - 2  # Pillow's 8-bit resampling precision
_HAMMING_F32 = (float(np.float32(0.54)), float(np.float32(0.46)))  # Pillow's hamming constants are C floats


def _box(x: np.ndarray) -> np.ndarray:
    return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_sin: Any = np.frompyfunc(math.sin, 1, 1)  # the C library's sin and cos, as Pillow calls them
_cos: Any = np.frompyfunc(math.cos, 1, 1)


def _sinc(x: np.ndarray) -> np.ndarray:
    angle = x * math.pi
    safe = np.where(x == 0.0, 1.0, angle)
    return np.where(x == 0.0, 1.0, _sin(safe).astype(np.float64) / safe)


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where((x >= -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3), 0.0)


def _hamming(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    angle = np.where(x == 0.0, 1.0, x * math.pi)
    window = _HAMMING_F32[0] + _HAMMING_F32[1] * _cos(angle).astype(np.float64)
    value = _sin(angle).astype(np.float64) / angle * window
    return np.where(x == 0.0, 1.0, np.where(x >= 1.0, 0.0, value))


_FILTERS = {1: (_lanczos, 3.0), 2: (_bilinear, 1.0), 3: (_bicubic, 2.0), 4: (_box, 0.5), 5: (_hamming, 1.0)}


@lru_cache(maxsize=128)
def _coefficients(in_size: int, out_size: int, resample: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's per-output weights for one axis: (out_size,) first input index and (out_size, taps) int32
    fixed-point weights (zero past each output's own window)."""
    function, support = _FILTERS[resample]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    taps = int(math.ceil(support)) * 2 + 1
    centre = (np.arange(out_size) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # C's (int) truncates; values are >= -0.5
    count = np.minimum((centre + support + 0.5).astype(np.int64), in_size) - first
    offsets = np.arange(taps)
    inside = offsets[None, :] < count[:, None]
    weights = function((offsets[None, :] + first[:, None] - centre[:, None] + 0.5) * (1.0 / filterscale))
    weights = np.where(inside, weights, 0.0)
    total = np.zeros(out_size)
    for tap in range(taps):  # in Pillow's order: the normalisation must round as Pillow's does
        total = total + weights[:, tap]
    weights = np.where(total[:, None] != 0.0, weights / np.where(total == 0.0, 1.0, total)[:, None], weights)
    fixed = np.trunc(weights * (1 << _PRECISION_BITS) + np.where(weights < 0, -0.5, 0.5))
    return first, fixed.astype(np.int32)


def _filter_pass(levels: torch.Tensor, out_size: int, resample: int, dim: int) -> torch.Tensor:
    """One of Pillow's passes along ``dim`` (-1 columns, -2 rows) of (C, H, W) uint8 levels; returns uint8."""
    if dim == -1:  # gather whole rows of the transposed image: contiguous copies, much faster than columns
        columns = _filter_pass(levels.transpose(-1, -2).contiguous(), out_size, resample, -2)
        return columns.transpose(-1, -2).contiguous()
    in_size = levels.shape[-2]
    first, fixed = _coefficients(in_size, out_size, resample)
    device = levels.device
    index = torch.from_numpy(np.minimum(first[:, None] + np.arange(fixed.shape[1])[None, :], in_size - 1)).to(device)
    weights = torch.from_numpy(fixed).to(device)[:, :, None]  # (out, taps, 1): one weight per output row
    total = torch.full((levels.shape[0], out_size, levels.shape[-1]), 1 << (_PRECISION_BITS - 1),
                       dtype=torch.int32, device=device)
    fused = device.type in ("cpu", "cuda")
    for tap in range(fixed.shape[1]):
        if not fixed[:, tap].any():
            continue
        taken = levels.index_select(-2, index[:, tap]).to(torch.int32)
        if fused:
            total.addcmul_(taken, weights[:, tap])
        else:
            total.add_(taken.mul_(weights[:, tap]))
    return torch.div(total, 1 << _PRECISION_BITS, rounding_mode="floor").clamp_(0, 255).to(torch.uint8)


def _nearest_positions(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output sample, accumulated in float64 as Pillow's affine scaler does (-1: none)."""
    step = in_size / out_size
    positions = np.cumsum(np.concatenate([[step * 0.5], np.full(out_size - 1, step)]))
    index = np.where(positions < 0.0, -1, positions.astype(np.int64))
    return np.where(index < in_size, index, -1)


def _nearest(levels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    rows = _nearest_positions(levels.shape[-2], size[0])
    cols = _nearest_positions(levels.shape[-1], size[1])
    out = levels.index_select(-2, torch.from_numpy(np.maximum(rows, 0)).to(levels.device))
    out = out.index_select(-1, torch.from_numpy(np.maximum(cols, 0)).to(levels.device))
    if (rows < 0).any() or (cols < 0).any():  # outside the source: Pillow fills with 0
        keep = torch.from_numpy((rows >= 0)[:, None] & (cols >= 0)[None, :]).to(levels.device)
        out = out * keep
    return out


def vertical_first(original_size: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether Pillow 13 resamples rows before columns when resizing ``original_size`` to ``size`` (both (H, W))."""
    (height, width), (new_h, new_w) = original_size, size
    return new_h < height and height - new_h > 2 * (width - new_w)


def pil_resize(levels: torch.Tensor, size: tuple[int, int], resample: int = 2) -> torch.Tensor:
    """Resize 8-bit levels exactly as Pillow's ``Image.resize(size[::-1], resample)`` does.

    Args:
        levels: (C, H, W) tensor of whole numbers in 0..255, any dtype (each channel is resized alike, as Pillow
            does an RGB image's bands).
        size: (height, width) of the result, both at least 1.
        resample: PIL filter id, one of :data:`PIL_FILTERS` (2: BILINEAR, Pillow's and SAM's default).

    Returns:
        (C, height, width) uint8 tensor of levels, on ``levels``' device. An unchanged size returns the levels
        as they are (as uint8), as Pillow does.

    Raises:
        ValueError: an unknown filter or an empty size.
    """
    if resample not in PIL_FILTERS:
        raise ValueError(f"Unsupported PIL resample filter {resample!r}: use one of {PIL_FILTERS}.")
    new_h, new_w = (int(side) for side in size)
    if new_h < 1 or new_w < 1:
        raise ValueError(f"Cannot resize to {size}: both sides must be at least 1 pixel.")
    levels = levels.to(torch.uint8)
    height, width = levels.shape[-2:]
    if (new_h, new_w) == (height, width):
        return levels
    if resample == 0:
        return _nearest(levels, (new_h, new_w))
    passes = [(-1, new_w), (-2, new_h)]
    if vertical_first((height, width), (new_h, new_w)):
        passes.reverse()
    for dim, out_size in passes:
        if levels.shape[dim] != out_size:
            levels = _filter_pass(levels, out_size, resample, dim)
    return levels
