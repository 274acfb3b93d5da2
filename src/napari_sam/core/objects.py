"""Objects kept as a box and a mask cropped to it, never as image-sized masks, so that thousands of objects in a
large image cost memory in proportion to their own sizes; painted into a labels array (numpy or zarr) at the end."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class MaskObject:
    """One object: ``mask`` ((h, w) bool) covers the image region ``rows`` x ``cols``."""

    rows: slice
    cols: slice
    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(row_min, col_min, row_max, col_max), inclusive, in image pixels."""
        return self.rows.start, self.cols.start, self.rows.stop - 1, self.cols.stop - 1

    def full(self, image_size: tuple[int, int]) -> np.ndarray:
        """The mask in an (H, W) array."""
        out = np.zeros(image_size, dtype=bool)
        out[self.rows, self.cols] = self.mask
        return out


def mask_iou(a, b) -> float:
    """Intersection over union of two boolean masks of one shape (0 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(row_min, col_min, row_max, col_max), inclusive, of a non-empty (H, W) bool mask."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def cropped(mask: np.ndarray, row0: int = 0, col0: int = 0) -> MaskObject | None:
    """The (h, w) bool ``mask`` (whose top-left pixel is image pixel (row0, col0)) cropped to its box, or None when
    it is empty."""
    found = ndimage.find_objects(mask.astype(np.uint8))
    if not found or found[0] is None:
        return None
    rows, cols = found[0]
    return MaskObject(slice(rows.start + row0, rows.stop + row0), slice(cols.start + col0, cols.stop + col0),
                      np.ascontiguousarray(mask[rows, cols]))


def cleaned(obj: MaskObject, min_area: int, image_size: tuple[int, int]) -> tuple[MaskObject | None, bool]:
    """Meta's small-region post-processing of one object of an image of ``image_size`` (H, W), as on the whole
    image: holes (background regions the object encloses, 8-connected) smaller than ``min_area`` are filled, then
    islands smaller than ``min_area`` removed (the largest kept when all are small). Returns (the object, or None
    if nothing is left; whether it changed).

    The object's crop is padded by one background pixel on the sides that lie inside the image: a background region
    that reaches that ring is the image's background around the object, never a hole, however small its part in the
    crop. A region that reaches only the image's border is enclosed there, as on the whole image, and filled when
    small. So the result never leaves the object's box, and never the image."""
    height, width = image_size
    pads = ((int(obj.rows.start > 0), int(obj.rows.stop < height)),
            (int(obj.cols.start > 0), int(obj.cols.stop < width)))
    mask = np.pad(obj.mask, pads)
    ring = np.zeros(mask.shape, dtype=bool)
    (top, bottom), (left, right) = pads
    ring[:top], ring[mask.shape[0] - bottom:], ring[:, :left], ring[:, mask.shape[1] - right:] = True, True, True, True
    eight = np.ones((3, 3), dtype=bool)
    background, count = ndimage.label(~mask, structure=eight)
    sizes = np.bincount(background.ravel(), minlength=count + 1)
    outside = np.unique(background[ring])
    holes = [label for label in range(1, count + 1) if sizes[label] < min_area and label not in outside]
    filled = mask | np.isin(background, holes)
    islands, found = ndimage.label(filled, structure=eight)
    island_sizes = np.bincount(islands.ravel(), minlength=found + 1)[1:]
    keep = np.nonzero(island_sizes >= min_area)[0] + 1
    if not len(keep) and found:
        keep = np.array([int(np.argmax(island_sizes)) + 1])
    if not holes and len(keep) == found:
        return obj, False
    return cropped(np.isin(islands, keep), obj.rows.start - top, obj.cols.start - left), True


def paint_labels(objects: list[MaskObject], image_size: tuple[int, int], out=None, first_id: int = 1):
    """Label ``first_id + k`` for ``objects[k]``, painted from the largest object to the smallest so that small
    objects stay visible, into ``out`` (an (H, W) array-like such as a zarr array, written region by region) or a
    new uint32 array.

    Returns the labels array (``out`` when given)."""
    labels = np.zeros(image_size, dtype=np.uint32) if out is None else out
    if out is not None and tuple(out.shape) != tuple(image_size):
        raise ValueError(f"The labels output has shape {tuple(out.shape)}, the image {tuple(image_size)}.")
    for index in sorted(range(len(objects)), key=lambda i: -objects[i].area):
        obj = objects[index]
        region = np.asarray(labels[obj.rows, obj.cols])
        region[obj.mask] = index + first_id
        labels[obj.rows, obj.cols] = region
    return labels
