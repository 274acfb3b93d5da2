"""Prompts for a batch run, per image, plane and object, from a CSV, JSON or GeoJSON file.

**CSV** (a header row, then one row per point or box)::

    image,plane,object,kind,row,col,row2,col2
    cells_01.tif,,1,positive,120.5,64,,
    cells_01.tif,,1,negative,130,70,,
    cells_01.tif,,2,box,10,10,40,52
    stack.tif,12,1,positive,200,310,,

- ``image``: the image's file name (``cells_01.tif``; a stack of files: its folder's name) or its output name.
- ``plane``: the plane of a stack (``12``; for a (t, z, y, x) stack ``"3,12"``); empty for a 2D image.
- ``object``: a positive whole number; the rows of one image, plane and object describe one object, which keeps
  this number as its label.
- ``kind``: ``positive`` or ``negative`` (a point at ``row``, ``col``), or ``box`` (corners ``row``, ``col`` and
  ``row2``, ``col2``, inclusive); at most one box per object and plane.

Positions are (row, col) in the image's data pixels, as napari shows them.

**JSON**: ``{"objects": [{"image": "cells_01.tif", "plane": [12], "object": 1, "points": [[row, col], ...],
"point_labels": [1, 0], "box": [row_min, col_min, row_max, col_max]}, ...]}`` (``plane``, ``points`` with
``point_labels`` (default all positive), and ``box`` optional).

**GeoJSON** (as QuPath and other annotation tools export it): a ``FeatureCollection`` whose features carry
``properties`` ``image``, ``object`` and optionally ``plane`` and ``positive`` (default true). A ``Point`` is a
point, any other geometry the box around it. GeoJSON coordinates are (x, y) = (col, row).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.decoding import ObjectPrompt


@dataclass(frozen=True)
class FilePrompt:
    """One numbered object's prompt on one plane of an image, as a prompts file gives it: the object keeps
    ``object_id`` as its label."""

    object_id: int
    plane: tuple[int, ...]
    prompt: ObjectPrompt


class PromptsFile:
    """The prompts of a file, by image; :meth:`for_image` finds an image's by its file or output name."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"The prompts file {path} does not exist.")
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"Could not read the prompts file {path}: {error}") from None
        entries = _read_csv(text) if self.path.suffix.lower() == ".csv" else _read_json(text)
        self.by_image: dict[str, list[FilePrompt]] = {}
        grouped: dict[tuple, dict] = {}
        for where, entry in entries:
            try:
                key = (str(entry["image"]), _plane(entry.get("plane")), _object_id(entry.get("object")))
                group = grouped.setdefault(key, {"points": [], "labels": [], "box": None})
                for point, label in zip(entry.get("points", []), entry.get("labels", [])):
                    group["points"].append(_position(point, "a point", 2))
                    group["labels"].append(int(label))
                if entry.get("box") is not None:
                    if group["box"] is not None:
                        raise ValueError(f"object {key[2]} has a second box on this plane (one box per object)")
                    group["box"] = _position(entry["box"], "a box", 4)
                    if group["box"][0] > group["box"][2] or group["box"][1] > group["box"][3]:
                        raise ValueError(f"box {list(group['box'])}: the first corner must be the top-left one")
            except (ValueError, TypeError, KeyError) as error:
                raise ValueError(f"{self.path.name}, {where}: {error}") from None
        for (image, plane, object_id), group in grouped.items():
            if not group["points"] and group["box"] is None:
                raise ValueError(f"{self.path.name}: object {object_id} of {image} has neither points nor a box.")
            self.by_image.setdefault(image, []).append(FilePrompt(object_id, plane, ObjectPrompt(
                np.array(group["points"], dtype=np.float64).reshape(-1, 2), np.array(group["labels"], dtype=np.int64),
                group["box"])))
        if not self.by_image:
            raise ValueError(f"The prompts file {path} holds no prompts.")

    def for_image(self, file_name: str, output_name: str) -> list[FilePrompt]:
        return self.by_image.get(file_name, []) or self.by_image.get(output_name, [])

    @staticmethod
    def digest(prompts: list[FilePrompt]) -> str:
        """A hash of an image's prompts (a re-run redoes an image whose prompts changed)."""
        text = json.dumps([[p.object_id, list(p.plane), p.prompt.points.tolist(), p.prompt.labels.tolist(),
                            None if p.prompt.box is None else p.prompt.box.tolist()] for p in prompts])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


#: The largest object id: labels are written as uint32.
MAX_OBJECT_ID = 2**32 - 1


def _object_id(value) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan  # missing, empty or not a number: refused below, naming the value
    if not number.is_integer() or not 1 <= number <= MAX_OBJECT_ID:
        raise ValueError(f"object must be a whole number from 1 to {MAX_OBJECT_ID} (labels are uint32), got "
                         f"{value!r}")
    return int(number)


def _plane(value) -> tuple[int, ...]:
    if value is None or value == "":
        return ()
    parts = value if isinstance(value, (list, tuple)) else str(value).replace(";", ",").replace(" ", ",").split(",")
    plane = tuple(float(p) for p in parts if str(p).strip() != "")
    if not all(p.is_integer() and p >= 0 for p in plane):
        raise ValueError(f"plane must be whole numbers >= 0, got {value!r}")
    return tuple(int(p) for p in plane)


def _position(values, what: str, count: int) -> np.ndarray:
    numbers = np.array([float(v) for v in values], dtype=np.float64)
    if numbers.shape != (count,) or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{what} needs {count} finite numbers, got {values!r}")
    return numbers


def _read_csv(text: str) -> list[tuple[str, dict]]:
    reader = csv.DictReader(text.splitlines())
    needed = {"image", "object", "kind", "row", "col"}
    missing = needed - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"The prompts CSV needs the columns {sorted(needed)} (and plane, row2, col2); missing "
                         f"{sorted(missing)}.")
    entries = []
    for number, row in enumerate(reader, start=2):
        kind = (row.get("kind") or "").strip().lower()
        entry = {"image": (row["image"] or "").strip(), "plane": row.get("plane"), "object": row["object"]}
        where = f"line {number}"
        if kind in ("positive", "negative"):
            entry.update(points=[[row["row"], row["col"]]], labels=[1 if kind == "positive" else 0])
        elif kind == "box":
            entry["box"] = [row["row"], row["col"], row.get("row2"), row.get("col2")]
        else:
            raise ValueError(f"{where}: kind must be positive, negative or box, got {row.get('kind')!r}.")
        if not entry["image"]:
            raise ValueError(f"{where}: no image named.")
        entries.append((where, entry))
    return entries


def _read_json(text: str) -> list[tuple[str, dict]]:
    try:
        values = json.loads(text)
    except ValueError as error:
        raise ValueError(f"The prompts file is not valid JSON: {error}") from None
    if isinstance(values, dict) and values.get("type") == "FeatureCollection":
        return [(f"feature {i}", _from_feature(feature)) for i, feature in enumerate(values.get("features", []))]
    if not isinstance(values, dict) or not isinstance(values.get("objects"), list):
        raise ValueError('A JSON prompts file holds {"objects": [...]} or a GeoJSON FeatureCollection.')
    entries = []
    for index, item in enumerate(values["objects"]):
        if not isinstance(item, dict):
            raise ValueError(f"objects[{index}] must be a JSON object.")
        points = item.get("points", [])
        labels = item.get("point_labels", [1] * len(points))
        if len(labels) != len(points):
            raise ValueError(f"objects[{index}]: {len(points)} points but {len(labels)} point_labels.")
        entries.append((f"objects[{index}]", {**item, "points": points, "labels": labels}))
    return entries


def _from_feature(feature: dict) -> dict:
    properties, geometry = feature.get("properties") or {}, feature.get("geometry") or {}
    entry = {"image": properties.get("image"), "object": properties.get("object"), "plane": properties.get("plane")}
    if entry["image"] is None or entry["object"] is None:
        raise ValueError("a feature needs the properties image and object")
    if geometry.get("type") == "Point":
        x, y = geometry["coordinates"][:2]
        entry.update(points=[[y, x]], labels=[1 if properties.get("positive", True) else 0])
    else:
        xy = np.array(_flatten(geometry.get("coordinates", [])), dtype=np.float64).reshape(-1, 2)
        if not len(xy):
            raise ValueError(f"a {geometry.get('type')} feature without coordinates")
        entry["box"] = [xy[:, 1].min(), xy[:, 0].min(), xy[:, 1].max(), xy[:, 0].max()]
    return entry


def _flatten(coordinates) -> list:
    if coordinates and isinstance(coordinates[0], (int, float)):
        return [coordinates[:2]]
    return [point for part in coordinates for point in _flatten(part)]
