"""What a prediction returns: masks in the frame they were decoded in, at full resolution, and how low-resolution
logits become masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..image import Frame
from ..model import ModelGeometry


@dataclass(frozen=True)
class Prediction:
    """Masks for one or more objects, several candidates each, in the image region of ``frame``.

    For an image seen whole, the frame is the whole image and the masks have the image's size. For a large image
    seen in tiles, the masks cover the frame the objects were decoded in (a tile, or a window around them), at the
    image's full resolution; :meth:`full_masks` places them in an image-sized array.

    Attributes:
        masks: bool, (objects, candidates, h, w): the frame's region (h, w) = ``frame.size``.
        scores: float32, (objects, candidates): the model's predicted IoU of each candidate.
        logits: float32, (objects, candidates, m, m): low-resolution logits in the frame (m is the checkpoint's mask
            size), usable as the next call's ``mask_input`` with ``frame=prediction.frame``.
        frame: the region and scale the masks were decoded in.
        image_size: (H, W) of the whole image.
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    frame: Frame
    image_size: tuple[int, int]

    @property
    def window(self) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1) of the image that ``masks`` cover, end-exclusive."""
        return self.frame.row0, self.frame.col0, self.frame.row1, self.frame.col1

    def best(self) -> np.ndarray:
        """(objects,) index of the best-scoring candidate of each object."""
        return self.scores.argmax(axis=1)

    def best_masks(self) -> np.ndarray:
        """(objects, h, w) bool: each object's best-scoring mask, in the frame's region."""
        return self.masks[np.arange(len(self.masks)), self.best()]

    def best_logits(self) -> np.ndarray:
        """(objects, m, m) float32: each object's best-scoring low-resolution logits."""
        return self.logits[np.arange(len(self.logits)), self.best()]

    def full_masks(self, masks: np.ndarray | None = None) -> np.ndarray:
        """``masks`` ((..., h, w) bool in the frame; default: all of them) placed into (..., H, W) image-sized
        arrays. For a whole-image frame this is the masks themselves."""
        masks = self.masks if masks is None else masks
        if masks.shape[-2:] == tuple(self.image_size):
            return masks
        full = np.zeros((*masks.shape[:-2], *self.image_size), dtype=bool)
        full[..., self.frame.row0: self.frame.row1, self.frame.col0: self.frame.col1] = masks
        return full


def upscale_logits(low_res: torch.Tensor, geometry: ModelGeometry, resized_size: tuple[int, int],
                   original_size: tuple[int, int]) -> torch.Tensor:
    """Low-res logits (n, m, m) to logits at the original (n, H, W), as SAM does: to the padded input size,
    crop the padding away, then to the original size (bilinear both times). The SAM2 family (``geometry.square``)
    upsamples straight to the original size."""
    if geometry.square:
        return F.interpolate(low_res[:, None].float(), size=original_size, mode="bilinear", align_corners=False)[:, 0]
    logits = F.interpolate(low_res[:, None].float(), size=geometry.pad_size, mode="bilinear", align_corners=False)
    logits = logits[..., : resized_size[0], : resized_size[1]]
    if tuple(resized_size) == tuple(original_size):  # resizing to the same size is the identity
        return logits[:, 0]
    return F.interpolate(logits, size=original_size, mode="bilinear", align_corners=False)[:, 0]


def downscale_masks(masks: np.ndarray, geometry: ModelGeometry, frame: Frame, eps: float = 1e-3) -> np.ndarray:
    """(n, h, w) bool masks over ``frame``'s region as (n, m, m) float32 low-res logits of its model input (the
    inverse of :func:`upscale_logits`): each low-res pixel's mask fraction, clipped to [eps, 1 - eps], as a logit."""
    fraction = torch.from_numpy(np.ascontiguousarray(masks)).to(torch.float32)[:, None]
    resized = geometry.input_size(frame)
    fraction = F.interpolate(fraction, size=resized, mode="bilinear", align_corners=False, antialias=True)
    pad_h, pad_w = geometry.pad_size
    fraction = F.pad(fraction, (0, pad_w - resized[1], 0, pad_h - resized[0]))
    fraction = F.adaptive_avg_pool2d(fraction, geometry.mask_size)[:, 0].clamp(eps, 1 - eps)
    return torch.logit(fraction).numpy()
