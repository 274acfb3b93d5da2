"""Frames: the regions of an image that the model sees, one model input each, and the tile grid of large images.

A small image is seen whole, resized so that its longest side fills the model's input (SAM's own rule; a
checkpoint trained at its images' own scale may cap the enlargement, ``ModelGeometry.max_upscale``). A large
image is seen in tiles at native resolution (or magnified, for a checkpoint that asks so,
``ModelGeometry.tile_scale``): square tiles of ``tile`` pixels on a grid whose neighbours overlap by twice the
``halo``, so that every pixel lies in some tile's core, at least ``halo`` pixels from that tile's inner borders. A
prompt is decoded in the frame that holds it best; when its mask reaches a frame's inner border the object goes on
outside, and a window centred on it is used instead (:func:`window_around`), at the tiles' scale when it fits in a
tile, resized otherwise. In magnified tiles an object covering more than a quarter of the input is decoded again
in a window at native resolution (:meth:`Tiling.too_large`).

All positions are (row, col) image pixels; regions are end-exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Frame:
    """A region of the image embedded as one model input.

    Attributes:
        row0, col0, row1, col1: the region, end-exclusive, in image pixels.
        scale: model-input pixels per image pixel (1: native resolution; the whole image of a large picture: < 1).
    """

    row0: int
    col0: int
    row1: int
    col1: int
    scale: float

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the region in image pixels."""
        return self.row1 - self.row0, self.col1 - self.col0

    @property
    def offset(self) -> np.ndarray:
        """(row0, col0) as float64, to move positions into the frame (subtract) or out of it (add)."""
        return np.array([self.row0, self.col0], dtype=np.float64)

    @property
    def resized_size(self) -> tuple[int, int]:
        """(height, width) of the region inside the model input: each side times ``scale``, rounded as SAM's
        ResizeLongestSide does, at least 1 pixel."""
        height, width = self.size
        return max(1, int(height * self.scale + 0.5)), max(1, int(width * self.scale + 0.5))

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row0, self.row1), slice(self.col0, self.col1)

    def holds(self, rows: tuple[float, float], cols: tuple[float, float]) -> bool:
        """Whether the region rows x cols ((min, max) in continuous pixels: pixel i covers [i - 0.5, i + 0.5))
        lies on this frame's pixels."""
        return (self.row0 - 0.5 <= rows[0] and rows[1] < self.row1 - 0.5 and self.col0 - 0.5 <= cols[0]
                and cols[1] < self.col1 - 0.5)

    def inner_edges(self, image_size: tuple[int, int]) -> tuple[bool, bool, bool, bool]:
        """Whether the top, left, bottom and right edges lie inside the image (not on its border)."""
        return self.row0 > 0, self.col0 > 0, self.row1 < image_size[0], self.col1 < image_size[1]


def whole_frame(image_size: tuple[int, int], input_size: int, max_upscale: float = 0.0) -> Frame:
    """The whole image (or a crop of that size), its longest side resized to ``input_size``; enlarged at most
    ``max_upscale`` times when that is set (> 0), the rest of the input then padded."""
    return Frame(0, 0, *image_size, fitted_scale(image_size, input_size, max_upscale))


def fitted_scale(size: tuple[int, int], input_size: int, max_upscale: float = 0.0) -> float:
    """The scale that fits a region of ``size`` (H, W) into the model's input: its longest side to ``input_size``
    (SAM's rule), but at most ``max_upscale`` when that is set (> 0)."""
    scale = input_size / max(size)
    return min(scale, max_upscale) if max_upscale > 0 else scale


def _starts(length: int, tile: int, stride: int) -> np.ndarray:
    """Tile starts along one axis: every ``stride`` pixels, the last tile ending on the border."""
    if length <= tile:
        return np.array([0])
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return np.array(sorted(set(starts)))


def _best_start(starts: np.ndarray, tile: int, length: int, low: float, high: float) -> int | None:
    """The start of the tile that holds [low, high] with the largest margin to its inner edges (an edge on the
    image border counts as infinitely far), or None when no tile holds it. Coordinates are continuous: pixel i
    covers [i - 0.5, i + 0.5)."""
    ends = starts + tile
    inside = (starts - 0.5 <= low) & (high < ends - 0.5)
    if not inside.any():
        return None
    before = np.where(starts > 0, low - starts, np.inf)
    after = np.where(ends < length, ends - 1 - high, np.inf)
    margin = np.where(inside, np.minimum(before, after), -np.inf)
    return int(starts[int(np.argmax(margin))])


@dataclass(frozen=True)
class Tiling:
    """The native-resolution tile grid of an image.

    Attributes:
        image_size: (H, W) of the image.
        tile: side of a tile in image pixels; halo: the overlap kept around each tile's core.
        input_size: the model's input side (a tile is resized by ``input_size / tile``: 1 for the default tile,
            more for a checkpoint that sees images magnified).
    """

    image_size: tuple[int, int]
    tile: int
    halo: int
    input_size: int

    @property
    def scale(self) -> float:
        return self.input_size / self.tile

    @cached_property
    def starts(self) -> tuple[np.ndarray, np.ndarray]:
        """Tile starts along rows and along columns (a tile never reaches past the image)."""
        stride = self.tile - 2 * self.halo
        return _starts(self.image_size[0], self.tile, stride), _starts(self.image_size[1], self.tile, stride)

    def frame_at(self, row0: int, col0: int) -> Frame:
        height, width = self.image_size
        return Frame(row0, col0, min(height, row0 + self.tile), min(width, col0 + self.tile), self.scale)

    def frames(self) -> list[Frame]:
        """Every tile, row by row."""
        rows, cols = self.starts
        return [self.frame_at(int(r), int(c)) for r in rows for c in cols]

    def frame_holding(self, rows: tuple[float, float], cols: tuple[float, float]) -> Frame | None:
        """The tile that holds the region rows x cols (inclusive pixel ranges) farthest from its inner edges, or
        None when no tile holds it."""
        row0 = _best_start(self.starts[0], self.tile, self.image_size[0], *rows)
        col0 = _best_start(self.starts[1], self.tile, self.image_size[1], *cols)
        return None if row0 is None or col0 is None else self.frame_at(row0, col0)

    def too_large(self, rows: tuple[float, float], cols: tuple[float, float]) -> bool:
        """Whether an object spanning rows x cols (image pixels) covers more than a quarter of the model's input in
        magnified tiles: the magnification is for small objects, and larger ones are better seen at native
        resolution. Never for native-resolution tiles."""
        extent = max(rows[1] - rows[0], cols[1] - cols[0]) + 1
        return self.scale > 1 and extent * self.scale > self.input_size / 4

    def window_around(self, rows: tuple[float, float], cols: tuple[float, float]) -> Frame:
        """A square window centred on the region rows x cols with a halo around it: one tile (at the tiles' scale)
        when it fits, else as large as needed and resized to the model's input; inside the image. An object
        :meth:`too_large` for magnified tiles gets a window of at least the input's side, seen at most at native
        resolution."""
        extent = max(rows[1] - rows[0], cols[1] - cols[0]) + 1
        least = max(self.tile, self.input_size) if self.too_large(rows, cols) else self.tile
        side = int(max(least, np.ceil(extent + 2 * self.halo)))
        height, width = self.image_size
        starts = []
        for (low, high), length in zip((rows, cols), (height, width)):
            start = int(round((low + high + 1) / 2 - side / 2))
            starts.append(int(np.clip(start, 0, max(0, length - side))))
        frame = Frame(starts[0], starts[1], min(height, starts[0] + side), min(width, starts[1] + side), 1.0)
        return Frame(frame.row0, frame.col0, frame.row1, frame.col1, self.input_size / max(side, *frame.size))


def tiling_for(size: tuple[int, int], settings, geometry) -> Tiling | None:
    """The tile grid an image of ``size`` (H, W) is seen in with these tiling settings
    (:class:`~napari_sam.core.settings.TilingSettings`) and this checkpoint's geometry (its own tile and how large
    an image it sees whole), or None when it is seen whole.

    Raises:
        ValueError: tiling settings that do not fit the checkpoint (a halo too large for its tile).
    """
    if not settings.tiles(size, geometry.default_tile, geometry.whole_limit):
        return None
    tile, halo = settings.resolved(geometry.default_tile)
    return Tiling(size, tile, halo, geometry.image_size)


def touches_inner_edge(masks: np.ndarray, frame: Frame, image_size: tuple[int, int]) -> bool:
    """Whether any (..., h, w) mask of ``frame`` reaches one of its edges that lie inside the image."""
    if masks.size == 0:
        return False
    top, left, bottom, right = frame.inner_edges(image_size)
    return bool((top and masks[..., 0, :].any()) or (bottom and masks[..., -1, :].any())
                or (left and masks[..., :, 0].any()) or (right and masks[..., :, -1].any()))


def prompt_extent(prompts, masks: np.ndarray | None = None, frame: Frame | None = None):
    """((row_min, row_max), (col_min, col_max)) of an ``PromptBatch``' points and boxes, and of ``masks``
    ((..., h, w) in ``frame``) when given, in image pixels."""
    rows, cols = [], []
    points = prompts.all_points()
    rows += list(points[:, 0])
    cols += list(points[:, 1])
    if prompts.boxes is not None:
        rows += list(prompts.boxes[:, [0, 2]].ravel())
        cols += list(prompts.boxes[:, [1, 3]].ravel())
    if masks is not None and frame is not None and masks.any():
        mask_rows, mask_cols = np.nonzero(masks.reshape(-1, *masks.shape[-2:]).any(axis=0))
        rows += [mask_rows.min() + frame.row0, mask_rows.max() + frame.row0]
        cols += [mask_cols.min() + frame.col0, mask_cols.max() + frame.col0]
    return (float(min(rows)), float(max(rows))), (float(min(cols)), float(max(cols)))


def place_in_frame(masks: np.ndarray, offset: tuple[int, int], frame: Frame) -> np.ndarray:
    """(objects, h, w) masks whose top-left pixel is at ``offset`` in the image, cut to ``frame``'s region."""
    out = np.zeros((len(masks), *frame.size), dtype=bool)
    row0, col0 = int(offset[0]) - frame.row0, int(offset[1]) - frame.col0
    rows = slice(max(0, row0), min(frame.size[0], row0 + masks.shape[1]))
    cols = slice(max(0, col0), min(frame.size[1], col0 + masks.shape[2]))
    if rows.stop > rows.start and cols.stop > cols.start:
        out[:, rows, cols] = masks[:, rows.start - row0: rows.stop - row0, cols.start - col0: cols.stop - col0]
    return out
