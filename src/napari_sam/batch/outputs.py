"""A batch run's outputs per image: the labels (OME-TIFF, or OME-zarr for large ones) with the input's pixel size, and
the per-object table; each written under a temporary name and renamed into place.

Labels have the input's shape without its colour axis, dtype uint32, 0 = background.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.image import file_axes
from .files import move_into_place, temporary_path, write_atomically

#: Labels above this many bytes are written as zarr when the format is ``auto``.
ZARR_ABOVE_BYTES = 1 << 30
#: Side of a zarr labels chunk.
ZARR_CHUNK = 1024
#: Default axis names by number of axes.
DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "QTZYX"}


@dataclass(frozen=True)
class Calibration:
    """Axis names (e.g. ``ZYX``) and the size of a pixel along each (None where unknown), in ``unit``."""

    axes: str
    scale: tuple[float | None, ...]
    unit: str = "µm"

    def to_dict(self) -> dict:
        return {"axes": self.axes, "scale": list(self.scale), "unit": self.unit}

    def for_ndim(self, ndim: int) -> Calibration:
        """This calibration over the last ``ndim`` axes (the labels drop a colour axis; a stack of files has one
        more axis than each file)."""
        axes = self.axes[-ndim:] if len(self.axes) >= ndim else DEFAULT_AXES.get(ndim, "Q" * (ndim - 2) + "YX")
        scale = (None,) * (ndim - len(self.scale)) + tuple(self.scale)[-ndim:]
        if len(set(axes)) != len(axes):
            axes = DEFAULT_AXES.get(ndim, "Q" * (ndim - 2) + "YX")
        return Calibration(axes, scale, self.unit)


def _physical(pixels, axis: str) -> float | None:
    value = pixels.get(f"PhysicalSize{axis}")
    return None if value is None else float(value)


def read_calibration(path: str | Path) -> Calibration | None:
    """The pixel size of an image file, where it records one: OME-TIFF, ImageJ TIFF, a TIFF whose resolution is per
    centimetre, or OME-zarr; None otherwise (PNG, JPEG, plain TIFF)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return _tiff_calibration(path)
        if path.suffix.lower() == ".zarr":
            return _zarr_calibration(path)
    except Exception:  # noqa: BLE001 - unreadable metadata: the labels are written without it
        return None
    return None


def _tiff_calibration(path: Path) -> Calibration | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        axes = "".join(a for a in (file_axes(path) or tif.series[0].axes) if a not in "CS")  # the labels' axes
        if tif.is_ome:
            root = ElementTree.fromstring(tif.ome_metadata)
            pixels = next(e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels").attrib
            unit = pixels.get("PhysicalSizeXUnit", "µm")
            return Calibration(axes, tuple(_physical(pixels, a) if a in "XYZ" else None for a in axes), unit)
        page = tif.pages[0]
        resolution = page.tags.get("XResolution"), page.tags.get("YResolution")
        sizes = [None if tag is None or not tag.value[0] else tag.value[1] / tag.value[0] for tag in resolution]
        if tif.is_imagej:
            meta = tif.imagej_metadata or {}
            unit = {"micron": "µm", "um": "µm", "\\u00B5m": "µm"}.get(meta.get("unit", ""), meta.get("unit", "pixel"))
            by_axis = {"Y": sizes[1], "X": sizes[0], "Z": meta.get("spacing")}
            return Calibration(axes, tuple(by_axis.get(a) for a in axes), unit)
        unit_tag = page.tags.get("ResolutionUnit")
        if unit_tag is not None and int(unit_tag.value) == 3 and all(sizes):  # per centimetre
            by_axis = {"Y": sizes[1] * 1e4, "X": sizes[0] * 1e4}
            return Calibration(axes, tuple(by_axis.get(a) for a in axes), "µm")
    return None


def _zarr_calibration(path: Path) -> Calibration | None:
    import zarr

    group = zarr.open(str(path), mode="r")
    multiscales = dict(group.attrs).get("multiscales") if not hasattr(group, "shape") else None
    if not multiscales:
        return None
    first = multiscales[0]
    letters = file_axes(path) or ""
    units = [axis.get("unit") for axis in first.get("axes", []) if isinstance(axis, dict)]
    scale = next((t["scale"] for t in first["datasets"][0].get("coordinateTransformations", [])
                  if t.get("type") == "scale"), None)
    if not letters or scale is None or len(scale) != len(letters):
        return None
    keep = [i for i, letter in enumerate(letters) if letter != "C"]  # the labels have no channel axis
    unit = next((u for u in units if u), "micrometer")
    return Calibration("".join(letters[i] for i in keep), tuple(float(scale[i]) for i in keep),
                       "µm" if unit == "micrometer" else unit)


def labels_format(choice: str, input_path: str, shape: tuple[int, ...]) -> str:
    """``tiff`` or ``zarr`` for labels of ``shape`` (uint32) of an image read from ``input_path``."""
    if choice != "auto":
        return choice
    large = int(np.prod(shape, dtype=np.int64)) * 4 > ZARR_ABOVE_BYTES
    return "zarr" if large or Path(input_path).suffix.lower() == ".zarr" else "tiff"


class LabelsOutput:
    """Labels being written: ``array`` (numpy for TIFF, a zarr array under a temporary name for zarr) to paint
    into, then :meth:`commit` puts the finished file in place (nothing appears at ``path`` before)."""

    def __init__(self, path: Path, shape: tuple[int, ...], fmt: str, calibration: Calibration | None):
        self.path, self.format, self.shape = path, fmt, tuple(shape)
        self.calibration = (calibration or Calibration(DEFAULT_AXES.get(len(shape), "YX"), (None,) * len(shape))
                            ).for_ndim(len(shape))
        self._temporary = temporary_path(path)
        if fmt == "zarr":
            import zarr

            group = zarr.open_group(str(self._temporary), mode="w")
            chunks = (1,) * (len(shape) - 2) + (min(ZARR_CHUNK, shape[-2]), min(ZARR_CHUNK, shape[-1]))
            self.array = group.create_array("0", shape=self.shape, chunks=chunks, dtype="uint32", fill_value=0)
            group.attrs["multiscales"] = [self._multiscales()]
        else:
            self.array = np.zeros(self.shape, dtype=np.uint32)

    def _multiscales(self) -> dict:
        cal = self.calibration
        axes = [{"name": a.lower(), "type": "space" if a in "XYZ" else "time" if a == "T" else "other",
                 **({"unit": "micrometer" if cal.unit == "µm" else cal.unit} if a in "XYZ" else {})}
                for a in cal.axes]
        scale = [1.0 if value is None else float(value) for value in cal.scale]
        return {"version": "0.4", "name": self.path.stem, "axes": axes,
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}

    def commit(self) -> Path:
        if self.format == "zarr":
            return move_into_place(self._temporary, self.path)
        import tifffile

        cal = self.calibration
        metadata = {"axes": cal.axes}
        for axis, value in zip(cal.axes, cal.scale):
            if axis in "XYZ" and value is not None:
                metadata[f"PhysicalSize{axis}"] = float(value)
                metadata[f"PhysicalSize{axis}Unit"] = cal.unit
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, self.array, ome=True, compression="zlib", metadata=metadata)
        return write_atomically(self.path, buffer.getvalue())


def labels_path(folder: Path, name: str, fmt: str) -> Path:
    return folder / f"{name}_labels.{'ome.zarr' if fmt == 'zarr' else 'ome.tif'}"


def table_path(folder: Path, name: str, fmt: str) -> Path:
    return folder / f"{name}_objects.{fmt}"


#: The per-object table's columns, in order (``plane`` columns come after ``id``).
TABLE_COLUMNS = ["area", "score", "stability", "box_row_min", "box_col_min", "box_row_max", "box_col_max",
                 "centroid_row", "centroid_col"]


def object_rows(labels_plane, plane: tuple[int, ...], objects) -> list[dict]:
    """One row per object found in ``labels_plane`` ((H, W) array-like, read object box by object box):
    ``objects`` is ``(id, (row0, col0, row1, col1) end-exclusive box to look in, score, stability)`` each. Area,
    box and centroid are measured on the labels as written, so they match the labels file; an object left with no
    pixel (covered by others) has no row."""
    rows = []
    for label, (row0, col0, row1, col1), score, stability in objects:
        region = np.asarray(labels_plane[row0:row1, col0:col1]) == label
        where = np.nonzero(region)
        if not len(where[0]):
            continue
        rows.append({"id": int(label), **{f"plane_{i}": int(p) for i, p in enumerate(plane)},
                     "area": int(len(where[0])), "score": float(score), "stability": float(stability),
                     "box_row_min": int(where[0].min()) + row0, "box_col_min": int(where[1].min()) + col0,
                     "box_row_max": int(where[0].max()) + row0, "box_col_max": int(where[1].max()) + col0,
                     "centroid_row": float(where[0].mean()) + row0, "centroid_col": float(where[1].mean()) + col0})
    return rows


def object_table(rows: list[dict], n_leading: int) -> pd.DataFrame:
    """The table of ``rows``: ``id``, the plane (``plane`` for one leading axis, ``plane_0``, ``plane_1``... for
    more; 0 for a 2D image), then :data:`TABLE_COLUMNS`."""
    planes = [f"plane_{i}" for i in range(max(1, n_leading))]
    table = pd.DataFrame(rows, columns=["id", *planes, *TABLE_COLUMNS])
    if not n_leading:
        table["plane_0"] = 0
    table = table.astype({"id": "int64", **{p: "int64" for p in planes}})
    return table.rename(columns={"plane_0": "plane"}) if len(planes) == 1 else table


def write_table(path: Path, table: pd.DataFrame, fmt: str) -> Path:
    buffer = io.BytesIO()
    if fmt == "parquet":
        table.to_parquet(buffer, index=False)
    else:
        table.to_csv(buffer, index=False)
    return write_atomically(path, buffer.getvalue())


def check_table_format(fmt: str) -> None:
    """Raise a ValueError when ``fmt`` needs a library that is missing."""
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("Parquet tables need pyarrow (pip install pyarrow); or write --table csv.") from None
