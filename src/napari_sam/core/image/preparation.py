"""Turning any 2D image a napari layer can hold into SAM's model input.

Two steps, both in torch on the model's device (no torchvision, no PIL):

1. :func:`display_rgb`: the image as napari shows it, as float32 RGB in [0, 1], shape (3, H, W). Intensities go
   through the contrast limits (or, without them, robust percentiles); gray is repeated to three channels; RGBA
   is composited onto white (as transformers' ``convert_to_rgb`` does); NaN becomes the low end, +inf the high.
2. :func:`model_input`: transformers' SAM image processor on the 8-bit levels the screen shows: resize the longest
   side to the checkpoint's ``longest_edge`` with its PIL filter, level for level as Pillow does
   (:mod:`napari_sam.core.image.resampling`), rescale, normalise with its mean/std, zero-pad bottom/right to its
   ``pad_size``, each as its preprocessor config says. Shape (1, 3, pad_h, pad_w).

Arrays are indexed (row, col[, channel]) throughout, like numpy and napari.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..model import ModelGeometry
from .resampling import pil_resize

#: Percentiles used to normalise an image that comes without contrast limits (uint8 uses its full range).
ROBUST_PERCENTILES = (0.5, 99.5)


def image_layout(image: np.ndarray, rgb: bool | None = None) -> bool:
    """Check that ``image`` is a 2D gray, RGB or RGBA array and return whether it has a channel axis.

    Args:
        image: array of shape (H, W), (H, W, 3) or (H, W, 4).
        rgb: True/False to state the layout (napari's ``Image.rgb``); None guesses it from the shape.

    Raises:
        ValueError: bool or complex data, an empty image, or a shape that is not one 2D plane.
    """
    if image.dtype == bool:
        raise ValueError(
            "Boolean images are not supported: SAM needs intensities. Convert the mask to uint8 (e.g. "
            "`image.astype(np.uint8) * 255`) or use it as a mask prompt instead."
        )
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"Unsupported image dtype {image.dtype}: use an integer or floating-point image.")
    if rgb is None:
        rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    if rgb and (image.ndim != 3 or image.shape[-1] not in (3, 4)):
        raise ValueError(f"An RGB(A) image must have shape (H, W, 3) or (H, W, 4), not {image.shape}.")
    if not rgb and image.ndim != 2:
        raise ValueError(
            f"Expected one 2D image of shape (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}. "
            "For a stack, pass the 2D slice to segment."
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"The image is empty (shape {image.shape}).")
    return bool(rgb)


def default_contrast_limits(image: np.ndarray, rgb: bool) -> tuple[float, float]:
    """Contrast limits used when none are given: uint8 keeps 0..255, anything else the robust percentiles.

    Only finite values count. The result always has ``low < high``, so it can be passed on as explicit limits: where
    the percentiles coincide (a flat image, e.g. every pixel 1000) it is ``(v, v + 1)``, or ``v`` and the next
    larger float where ``v + 1`` rounds to ``v``, which shows the image black, as :func:`display_rgb` does.

    Raises:
        ValueError: the image has no finite values.
    """
    values = image[..., :3] if rgb else image
    if values.dtype == np.uint8:
        return 0.0, 255.0
    finite = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values.ravel()
    if finite.size == 0:
        raise ValueError("The image has no finite values (all NaN or inf): there is nothing to segment.")
    sample = finite if finite.size <= 4_000_000 else finite[:: finite.size // 4_000_000 + 1]
    low, high = (float(v) for v in np.percentile(sample, ROBUST_PERCENTILES))
    if high > low:
        return low, high
    with np.errstate(over="ignore"):
        high = low + 1.0 if low + 1.0 > low else float(np.nextafter(low, np.inf))
    if not np.isfinite(high):  # the largest float: make room below instead
        low, high = float(np.nextafter(low, -np.inf)), low
    return low, high


def check_contrast_limits(contrast_limits) -> tuple[float, float]:
    """``contrast_limits`` as ``(low, high)`` floats.

    Raises:
        ValueError: naming ``contrast_limits``, unless it is two finite numbers with ``low < high`` (a scalar, a
            string, three values, None inside, NaN or inf are refused).
    """
    message = f"contrast_limits must be two numbers (low, high), got {contrast_limits!r}."
    if isinstance(contrast_limits, (str, bytes, dict)):
        raise ValueError(message)
    try:
        if np.ndim(contrast_limits) != 1:
            raise ValueError(message)
        low, high = (float(v) for v in contrast_limits)
    except (TypeError, ValueError) as error:
        raise ValueError(message) from error
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        raise ValueError(f"contrast_limits must be finite with low < high, got ({low}, {high}).")
    return low, high


def _alpha_range(dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def display_rgb(
    image: np.ndarray,
    contrast_limits: Sequence[float] | None = None,
    rgb: bool | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The image as napari displays it: float32 RGB in [0, 1], shape (3, H, W), on ``device``.

    Args:
        image: (H, W), (H, W, 3) or (H, W, 4) array of any integer or float dtype; NaN and inf allowed.
        contrast_limits: (low, high) mapped to 0 and 1 (values outside are clipped); for RGB(A) they apply to
            the colour channels alike. None: :func:`default_contrast_limits` (uint8 keeps 0..255, other dtypes
            use :data:`ROBUST_PERCENTILES`; a flat image shows black).
        rgb: whether the last axis holds colour channels; None guesses from the shape.
        device: where the result is computed.

    Raises:
        ValueError: for unsupported dtypes or shapes, malformed limits (see :func:`check_contrast_limits`), or no
            finite values.
    """
    image = np.asarray(image)
    has_channels = image_layout(image, rgb)
    if contrast_limits is None:
        low, high = default_contrast_limits(image, has_channels)
    else:
        low, high = check_contrast_limits(contrast_limits)
    span = high - low

    native = image.astype(image.dtype.newbyteorder("="), copy=False)
    data = torch.from_numpy(np.ascontiguousarray(native)).to(device)
    if not has_channels:
        data = data[None]
    else:
        data = data.permute(2, 0, 1)
    wide = image.dtype.itemsize > 4 and data.device.type != "mps"  # MPS has no float64
    colour = data[:3].to(torch.float64 if wide else torch.float32)
    colour = ((colour - low) / span).to(torch.float32)
    colour = torch.nan_to_num(colour, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
    if colour.shape[0] == 1:
        colour = colour.expand(3, -1, -1)
    if data.shape[0] == 4:
        alpha = data[3].to(torch.float32) / _alpha_range(image.dtype)
        alpha = torch.nan_to_num(alpha, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
        colour = colour * alpha + (1.0 - alpha)  # onto white, like transformers' convert_to_rgb
    return colour.contiguous()


def rounded_levels(values: torch.Tensor) -> torch.Tensor:
    """Float pixel values in 8-bit units rounded to whole levels (half up, as an 8-bit image stores them) and kept
    within 0..255, in place."""
    return values.add_(0.5).floor_().clamp_(0.0, 255.0)


def normalised(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(..., 3, H, W) float32 pixels normalised per channel: (pixels - mean) / std."""
    mean_t = torch.tensor(mean, device=pixels.device, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, device=pixels.device, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean_t) / std_t


def resized_shape(original_size: tuple[int, int], longest_edge: int) -> tuple[int, int]:
    """(height, width) after scaling the longest side to ``longest_edge``, rounded like SAM's ResizeLongestSide
    (``int(side * scale + 0.5)``).

    A side is at least 1 pixel: an image thinner than one model pixel after scaling (1 x 513 into a 256-pixel
    input, 2 x 1025) becomes one row or column, where transformers' processor would ask Pillow for an empty image.
    """
    height, width = original_size
    scale = longest_edge / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def model_input(rgb01: torch.Tensor, geometry: ModelGeometry, dtype: torch.dtype = torch.float32,
                resized: tuple[int, int] | None = None) -> torch.Tensor:
    """SAM's pixel values from a (3, H, W) float RGB image in [0, 1], as transformers' SAM image processor makes
    them from the 8-bit image the screen shows.

    1. The image is taken as 8-bit levels (``floor(255 * v + 0.5)``), as SAM was trained.
    2. Its longest side is resized to ``geometry.longest_edge`` (:func:`resized_shape`), or the image to
       ``resized`` (height, width) when given (a tile at its own scale), with the PIL filter
       ``geometry.resample``, level for level as Pillow does (:func:`~napari_sam.core.image.resampling.pil_resize`).
    3. Levels are multiplied by ``geometry.rescale_factor`` if ``geometry.do_rescale`` (1/255: values in [0, 1]).
    4. They are normalised per channel with ``geometry.mean``/``std`` if ``geometry.do_normalize``.
    5. The result is zero-padded bottom/right to ``geometry.pad_size``.

    Returns:
        Tensor of shape (1, 3, pad_h, pad_w) and dtype ``dtype``, on ``rgb01``'s device.

    Raises:
        ValueError: the checkpoint does not pad (``do_pad`` false) and the image does not resize to exactly
            ``pad_size`` (only square images do).
    """
    height, width = rgb01.shape[-2:]
    new_h, new_w = resized or resized_shape((height, width), geometry.longest_edge)
    pad_h, pad_w = geometry.pad_size
    if new_h > pad_h or new_w > pad_w:
        raise ValueError(f"An image resized to {new_h}x{new_w} does not fit the model's {pad_h}x{pad_w} input.")
    if not geometry.do_pad and (new_h, new_w) != (pad_h, pad_w):
        raise ValueError(
            f"This checkpoint's preprocessor config sets do_pad to false, so its model takes only images that resize "
            f"to exactly {pad_h}x{pad_w} (square ones); this image is {height}x{width} (resized {new_h}x{new_w})."
        )
    levels = rounded_levels(rgb01 * 255.0).to(torch.uint8)
    levels = pil_resize(levels, (new_h, new_w), geometry.resample)
    if geometry.do_rescale:  # in float64, then float32, as transformers rescales: one table lookup per level
        table = (np.arange(256, dtype=np.float64) * geometry.rescale_factor).astype(np.float32)
        pixels = torch.from_numpy(table).to(levels.device)[levels.long()]
    else:
        pixels = levels.to(torch.float32)
    if geometry.do_normalize:
        pixels = normalised(pixels, geometry.mean, geometry.std)
    padded = F.pad(pixels[None], (0, pad_w - new_w, 0, pad_h - new_h), value=0.0)
    return padded.to(dtype)
