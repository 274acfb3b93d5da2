"""The image a predictor works on, read lazily: a numpy, dask or zarr array (anything with ``shape``, ``dtype``
and ``__getitem__``) of which only the regions the model sees are ever read."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .frames import Frame, Tiling
from .preparation import check_contrast_limits, default_contrast_limits, image_layout

#: An array-like image bigger than this many pixels gets its default contrast limits from a sample of tiles.
SAMPLED_ABOVE = 16 * 1024 * 1024
#: Frames whose pixel digests an image source remembers (a tile's digest is 32 characters).
DIGESTS_KEPT = 4096
#: The sample: this many square regions of this side, spread evenly over the image.
SAMPLE_TILES, SAMPLE_SIDE = 16, 256


def content_signature(image: np.ndarray) -> str:
    """A hex digest of the image's shape, dtype and bytes (BLAKE2b, 128 bits)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((image.shape, image.dtype.str)).encode())
    digest.update(np.ascontiguousarray(image).data.cast("B"))
    return digest.hexdigest()


class ArrayView:
    """An array-like that reads only what it is indexed with: a subclass sets ``shape`` and ``dtype`` and reads
    ``view[key]``; ``ndim`` and ``size`` follow from the shape, and ``np.asarray(view)`` reads it whole."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __getitem__(self, key) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype=None, copy=None):
        whole = np.asarray(self[(slice(None),) * self.ndim])
        return whole if dtype is None else whole.astype(dtype)


class LazyPlane(ArrayView):
    """The plane at ``index`` of an array's leading axes, read only where it is indexed: ``shape`` (H, W[, C]) and
    ``dtype`` like an array, and ``plane[rows, cols]`` reads that region alone (from numpy, dask or zarr data
    alike), so a tile of a huge plane is all that is read."""

    def __init__(self, data, index: tuple[int, ...]):
        self.data, self.index = data, tuple(index)
        self.shape = tuple(int(n) for n in data.shape[len(self.index):])
        self.dtype = np.dtype(data.dtype)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.data[self.index + key])


class PlaneWriter(ArrayView):
    """The plane at ``index`` of an array (numpy or zarr), to read and write region by region: ``shape`` (H, W),
    ``writer[rows, cols]`` and ``writer[rows, cols] = values`` address that plane only."""

    def __init__(self, array, index: tuple[int, ...]):
        self.array, self.index = array, tuple(index)
        self.shape = tuple(int(n) for n in array.shape[len(self.index):])
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, key):
        return np.asarray(self.array[self.index + (key if isinstance(key, tuple) else (key,))])

    def __setitem__(self, key, values) -> None:
        self.array[self.index + (key if isinstance(key, tuple) else (key,))] = values


def plane_of(data, index: tuple[int, ...]):
    """The plane at ``index`` of ``data``: a view of an in-memory (numpy) array, else a :class:`LazyPlane`."""
    if isinstance(data, np.ndarray):
        return data[tuple(index)] if index else data
    return LazyPlane(data, index) if index else data


def _array_like(image) -> Any:
    if all(hasattr(image, name) for name in ("shape", "dtype", "ndim", "__getitem__")):
        return image
    return np.asarray(image)


def _sampled_limits(data, size: tuple[int, int], rgb: bool) -> tuple[float, float]:
    """Default contrast limits from :data:`SAMPLE_TILES` regions spread over the image (never the whole of it)."""
    per_side = int(np.ceil(np.sqrt(SAMPLE_TILES)))
    side = min(SAMPLE_SIDE, *size)
    rows = np.linspace(0, size[0] - side, per_side).astype(int)
    cols = np.linspace(0, size[1] - side, per_side).astype(int)
    parts = [np.asarray(data[r: r + side, c: c + side]) for r in rows for c in cols]
    return default_contrast_limits(np.concatenate(parts, axis=0), rgb)


@dataclass(frozen=True)
class ImageSource:
    """An image and how napari shows it.

    Attributes:
        data: (H, W), (H, W, 3) or (H, W, 4) array-like of any integer or float dtype.
        size: (H, W).
        rgb: whether the last axis is colour.
        contrast_limits: (low, high) mapped to black and white.
    """

    data: Any
    size: tuple[int, int]
    rgb: bool
    contrast_limits: tuple[float, float]

    _digests: dict = field(default_factory=dict, init=False, compare=False, repr=False)
    _last: list = field(default_factory=lambda: [None, None], init=False, compare=False, repr=False)

    def read(self, frame: Frame) -> np.ndarray:
        """The pixels of ``frame`` as a numpy array ((h, w) or (h, w, C)); only they are read (the last frame read
        is kept: its digest and its embedding need it once each)."""
        last_frame, pixels = self._last
        if last_frame != frame:
            pixels = np.asarray(self.data[frame.row0: frame.row1, frame.col0: frame.col1])
            self._last[:] = [frame, pixels]
        return pixels

    def digest(self, frame: Frame) -> str:
        """:func:`content_signature` of ``frame``'s pixels, computed once per frame of this source (until
        :meth:`recheck`): a run that decodes a tile batch by batch reads and hashes it once."""
        found = self._digests.get(frame)
        if found is None:
            found = content_signature(self.read(frame))
            if len(self._digests) >= DIGESTS_KEPT:
                self._digests.pop(next(iter(self._digests)))
            self._digests[frame] = found
        return found


    def recheck(self) -> None:
        """Hash an in-memory (numpy) image's frames again when next used, so that pixels changed in place since get
        their own digest (and embedding), not the old one's. A lazy image (dask, zarr) is taken as read."""
        if isinstance(self.data, np.ndarray):
            self._digests.clear()


@dataclass(frozen=True)
class ImagePlan:
    """An image as the model sees it: its source (read lazily) and its tile grid (None: seen whole)."""

    source: ImageSource
    tiles: Tiling | None

    @property
    def size(self) -> tuple[int, int]:
        return self.source.size


def open_image(image, contrast_limits=None, rgb: bool | None = None) -> ImageSource:
    """Check ``image`` without reading it whole and decide its contrast limits.

    Without ``contrast_limits``, a numpy image (or any image up to :data:`SAMPLED_ABOVE` pixels) uses
    :func:`default_contrast_limits` over all of it; a larger lazy image over a sample of regions spread across it.

    Raises:
        ValueError: an unsupported dtype or shape, or malformed contrast limits.
    """
    data = _array_like(image)
    has_channels = image_layout(data, rgb)
    size = (int(data.shape[0]), int(data.shape[1]))
    if contrast_limits is not None:
        limits = check_contrast_limits(contrast_limits)
    elif isinstance(data, np.ndarray) or size[0] * size[1] <= SAMPLED_ABOVE:
        limits = default_contrast_limits(np.asarray(data), has_channels)
    else:
        limits = _sampled_limits(data, size, has_channels)
    return ImageSource(data, size, has_channels, limits)
