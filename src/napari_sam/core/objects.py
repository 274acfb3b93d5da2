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


def cropped(mask: np.ndarray, row0: int = 0, col0: int = 0) -> MaskObject | None:
    """The (h, w) bool ``mask`` (whose top-left pixel is image pixel (row0, col0)) cropped to its box, or None when
    it is empty."""
    found = ndimage.find_objects(mask.astype(np.uint8))
    if not found or found[0] is None:
        return None
    rows, cols = found[0]
    return MaskObject(slice(rows.start + row0, rows.stop + row0), slice(cols.start + col0, cols.stop + col0),
                      np.ascontiguousarray(mask[rows, cols]))


def cleaned(obj: MaskObject, min_area: int) -> tuple[MaskObject | None, bool]:
    """Meta's small-region post-processing of one object: holes and islands smaller than ``min_area`` removed;
    (the object, or None if nothing is left, and whether it changed). The crop is padded by one background pixel so
    that the background around the object is never taken for a hole."""
    padded = np.pad(obj.mask, 1)
    padded, holes = remove_small_regions(padded, min_area, "holes")
    padded, islands = remove_small_regions(padded, min_area, "islands")
    if not (holes or islands):
        return obj, False
    return cropped(padded, obj.rows.start - 1, obj.cols.start - 1), True


def paint_labels(objects: list[MaskObject], image_size: tuple[int, int], out=None, dtype=np.uint32,
                 first_id: int = 1):
    """Label ``first_id + k`` for ``objects[k]``, painted from the largest object to the smallest so that small
    objects stay visible, into ``out`` (an (H, W) array-like such as a zarr array, written region by region) or a
    new array.

    Returns the labels array (``out`` when given)."""
    labels = np.zeros(image_size, dtype=dtype) if out is None else out
    if out is not None and tuple(out.shape) != tuple(image_size):
        raise ValueError(f"The labels output has shape {tuple(out.shape)}, the image {tuple(image_size)}.")
    for index in sorted(range(len(objects)), key=lambda i: -objects[i].area):
        obj = objects[index]
        region = np.asarray(labels[obj.rows, obj.cols])
        region[obj.mask] = index + first_id
        labels[obj.rows, obj.cols] = region
    return labels


def remove_small_regions(mask: np.ndarray, area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Remove islands (``mode="islands"``) or fill holes (``"holes"``) smaller than ``area`` pixels, with
    8-connectivity. Returns the mask and whether it changed (Meta's ``remove_small_regions``)."""
    holes = mode == "holes"
    working = mask ^ holes  # the holes are the regions of the inverted mask
    regions, count = ndimage.label(working, structure=np.ones((3, 3)))
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    small = np.nonzero(sizes < area)[0] + 1
    if len(small) == 0:
        return mask, False
    if holes:
        return ~np.isin(regions, np.setdiff1d(np.arange(1, count + 1), small)), True
    keep = np.setdiff1d(np.arange(1, count + 1), small)
    if len(keep) == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(regions, keep), True
