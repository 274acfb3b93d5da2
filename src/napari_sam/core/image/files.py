"""Images read from files (for batch runs and the command line), lazily where the format allows it, their axes
where the file names them, and the contrast limits napari would give them.

TIFF (including multi-page and OME-TIFF) is read through tifffile's zarr view, so only the planes and tiles used
are read; zarr and OME-zarr arrays are opened in place; PNG and JPEG are small enough to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: File endings this module reads.
IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr", ".png", ".jpg", ".jpeg")


def read_image(path: str | Path):
    """The image at ``path`` as an array-like (numpy, or zarr for TIFF and zarr files: nothing is read yet).

    An OME-zarr (multiscale) group gives its full-resolution array.

    Raises:
        ValueError: a file that does not exist or has another ending, or that cannot be read as an image.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile
            import zarr

            return _full_resolution(zarr.open(tifffile.imread(path, aszarr=True), mode="r"))
        if suffix == ".zarr":
            import zarr

            return _full_resolution(zarr.open(str(path), mode="r"))
        if suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as image:
                return np.asarray(image)
    except ValueError as error:
        raise ValueError(f"Could not read {path}: {error}") from error
    except Exception as error:  # noqa: BLE001 - a corrupt file: one clear message
        raise ValueError(f"Could not read {path} as an image: {type(error).__name__}: {error}") from error
    raise ValueError(f"{path} is not an image this reads ({', '.join(IMAGE_SUFFIXES)}).")


def file_axes(path: str | Path) -> str | None:
    """The axis letters of the array :func:`read_image` gives for ``path`` (``T``, ``C``, ``Z``, ``Y``, ``X``; ``S``
    for a TIFF's colour samples), where the file names its axes: OME-TIFF, ImageJ TIFF, a TIFF written with axes, or
    OME-zarr. None where it does not (PNG, JPEG, plain TIFF, plain zarr) or cannot be read."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                named = tif.is_ome or tif.is_imagej or tif.is_shaped
                axes, ndim = series.axes, len(series.shape)
        elif suffix == ".zarr":
            import zarr

            opened = zarr.open(str(path), mode="r")
            attrs: Any = {} if hasattr(opened, "shape") else opened.attrs.asdict()
            listed: list = (attrs.get("multiscales") or [{}])[0].get("axes", [])
            axes = "".join("C" if isinstance(a, dict) and a.get("type") == "channel"
                           else (a.get("name", "?") if isinstance(a, dict) else str(a))[:1].upper() for a in listed)
            named, ndim = bool(axes), len(axes)
        else:
            return None
    except Exception:  # noqa: BLE001 - unreadable metadata: read_image says what is wrong with the file
        return None
    return axes if named and len(axes) == ndim else None


def _full_resolution(opened):
    """A zarr array as it is; of a zarr group (OME-zarr, a pyramidal TIFF's levels), the full-resolution array: the
    first dataset of its multiscales metadata, else its first array by name."""
    if hasattr(opened, "shape"):
        return opened
    datasets = opened.attrs.get("multiscales", [{}])[0].get("datasets", [])
    if datasets:
        return opened[datasets[0]["path"]]
    arrays = list(opened.array_keys())
    if not arrays:
        raise ValueError("the zarr group holds no array")
    return opened[sorted(arrays)[0]]


def is_rgb(shape: tuple[int, ...]) -> bool:
    """Whether an image of ``shape`` has a colour axis last (3 or 4 channels after at least two spatial axes)."""
    return len(shape) >= 3 and shape[-1] in (3, 4)


def planes(shape: tuple[int, ...], rgb: bool) -> list[tuple[int, ...]]:
    """The indices of every 2D plane of an image of ``shape`` (leading axes before the last two spatial ones)."""
    spatial = len(shape) - (3 if rgb else 2)
    return list(np.ndindex(*shape[:spatial])) if spatial > 0 else [()]


def napari_contrast_limits(data, rgb: bool, in_memory: bool = True) -> tuple[float, float]:
    """The contrast limits napari gives a new image layer of ``data``, so that embeddings made here are the ones the
    napari-sam docks look for.

    ``in_memory``: napari's reader loads the file into memory (TIFF, PNG, JPEG): a 2D image gets its exact data range
    (computed here band by band, never holding the whole image), a stack napari's sampled range. Otherwise (zarr,
    opened lazily) napari takes the range of the first slice it shows, which depends on the view: this gives the
    sampled range, and the contrast limits the layer shows should be passed instead.
    """
    if np.dtype(data.dtype) == np.uint8:
        return 0.0, 255.0  # napari's range of 8-bit images
    if in_memory and len(data.shape) == 2:
        rows = max(1, (64 << 20) // max(1, data.shape[1] * data.dtype.itemsize))
        low, high = np.inf, -np.inf
        for start in range(0, data.shape[0], rows):
            band = np.asarray(data[start: start + rows])
            finite = band[np.isfinite(band)] if band.dtype.kind == "f" else band
            if finite.size:
                low, high = min(low, float(finite.min())), max(high, float(finite.max()))
        if low > high:  # nothing finite
            low, high = 0.0, 1.0
        return (min(low, 0.0), max(high, 1.0)) if low == high else (low, high)
    return napari_data_range(data, rgb)


def _finite(values, extreme, default: float) -> float:
    """``extreme`` (``np.min`` or ``np.max``) of the finite ``values`` (``default`` when there is none), as napari's
    ``_nanmin`` and ``_nanmax``."""
    values = np.asarray(values)
    found = extreme(values)
    if not np.isfinite(found):
        finite = values[np.isfinite(values)]
        found = extreme(finite) if finite.size else default
    return float(found)


def _finite_min(values) -> float:
    return _finite(values, np.min, 0.0)


def _finite_max(values) -> float:
    return _finite(values, np.max, 1.0)


def napari_data_range(data, rgb: bool) -> tuple[float, float]:
    """The range napari's ``calc_data_range`` gives a new image layer of ``data`` (napari's rule, without napari):
    uint8 is 0..255; a large array (over 1e7 values) is sampled on its first, middle and last planes (a central
    62-pixel patch of each when the planes are large too); a flat range widens to include 0 and 1."""
    if np.dtype(data.dtype) == np.uint8:
        return 0.0, 255.0
    shape = tuple(int(n) for n in data.shape)
    size = int(np.prod(shape, dtype=np.int64))
    if size > 1e7 and (len(shape) == 1 or (rgb and len(shape) == 2)):
        centre = shape[0] // 2
        parts = [np.asarray(data[part]) for part in (slice(0, 4096), slice(centre - 2048, centre + 2048),
                                                         slice(-4096, None))]
        low, high = _finite_min([_finite_min(p) for p in parts]), _finite_max([_finite_max(p) for p in parts])
    elif size > 1e7:
        offset = 2 + int(rgb)
        lead = shape[:-offset]
        planes: list[tuple] = [(0,) * len(lead), tuple(s // 2 for s in lead), tuple(s - 1 for s in lead)]
        plane = shape[-offset:]
        if np.prod(plane) > 1e7 and plane[0] > 64 and plane[1] > 64:
            patch = tuple(slice(s // 2 - 31, s // 2 + 31) for s in plane[:2])
            planes = [index + patch for index in planes]
        parts = [np.asarray(data[index]) for index in planes]
        low, high = _finite_min([_finite_min(p) for p in parts]), _finite_max([_finite_max(p) for p in parts])
    else:
        values = np.asarray(data)
        low, high = _finite_min(values), _finite_max(values)
    if low == high:
        low, high = min(low, 0.0), max(high, 1.0)
    return low, high
