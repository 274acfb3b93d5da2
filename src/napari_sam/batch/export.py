"""A series or batch output folder exported whole: COCO instance annotations (masks as RLE, through
``pycocotools``) and one objects table of every image.

The images of a folder are those of its series record, else those its batch run finished (its records), else every
labels file in it. A plane of a stack is one COCO image (its ``napari_sam.plane`` says which); an object keeps its
labels id in ``napari_sam_id``, so the planes of a 3D object can be put together again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .files import write_atomically
from .output_lock import RECORDS
from .outputs import table_path
from .series import SERIES_FILE, labels_file, read_labels, read_record


@dataclass(frozen=True)
class Annotated:
    """One image of an output folder: its name, its labels file and its input files (may be unknown: ())."""

    name: str
    labels: Path
    inputs: tuple[str, ...]


def annotated_images(out: str | Path) -> list[Annotated]:
    """The images of the output folder ``out`` that have labels, in the series' (or the batch run's) order.

    Raises:
        ValueError: ``out`` is not a folder, or holds no labels.
    """
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"{out} is not a folder: give a series or batch output folder.")
    entries = (read_record(out / SERIES_FILE) or {}).get("images")
    if not entries:
        records = sorted((out / RECORDS).glob("*.json")) if (out / RECORDS).is_dir() else []
        entries = [record for record in (read_record(path) for path in records)
                   if record and record.get("status") == "done" and "name" in record]
    found = []
    if entries:
        for entry in entries:
            path = labels_file(out, str(entry.get("name")))
            if path is not None:
                inputs = entry.get("inputs") or []
                found.append(Annotated(str(entry["name"]), path,
                                       tuple(str(p[0] if isinstance(p, list) else p) for p in inputs)))
    else:
        for path in sorted([*out.glob("*_labels.ome.tif"), *out.glob("*_labels.ome.zarr")]):
            found.append(Annotated(path.name.rsplit("_labels.", 1)[0], path, ()))
    if not found:
        raise ValueError(f"{out} holds no labels (NAME_labels.ome.tif or .ome.zarr): annotate or segment first.")
    return found


def export_coco(out: str | Path, path: str | Path) -> dict:
    """Write the COCO instance annotations of every image of ``out`` to ``path`` (atomically); returns the COCO
    dict's counts ``{"images", "annotations"}``."""
    from pycocotools import mask as coco_mask
    from scipy import ndimage

    images, annotations = [], []
    for image in annotated_images(out):
        labels = read_labels(image.labels)
        shape = tuple(int(n) for n in labels.shape)
        for plane in np.ndindex(*shape[:-2]):
            values = np.asarray(labels[plane])
            image_id = len(images) + 1
            file_name = image.inputs[plane[0]] if len(image.inputs) > 1 and plane else (
                image.inputs[0] if image.inputs else image.name)
            images.append({"id": image_id, "file_name": file_name, "height": shape[-2], "width": shape[-1],
                           "napari_sam": {"image": image.name, "plane": list(plane)}})
            for label, box in enumerate(ndimage.find_objects(values), start=1):
                if box is None:
                    continue
                mask = np.zeros(values.shape, dtype=np.uint8, order="F")
                mask[box] = values[box] == label
                rle = coco_mask.encode(mask)
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                    "segmentation": {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")},
                    "area": int(coco_mask.area(rle)), "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                    "napari_sam_id": label})
    coco = {"info": {"description": f"napari-sam annotations of {Path(out).resolve().name}"},
            "images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
    write_atomically(Path(path), json.dumps(coco).encode())
    return {"images": len(images), "annotations": len(annotations)}


def merged_table(out: str | Path) -> pd.DataFrame:
    """Every image's objects table in one, with the image's name first (``image``); images without a table are
    left out."""
    tables = []
    for image in annotated_images(out):
        for fmt in ("csv", "parquet"):
            path = table_path(Path(out), image.name, fmt)
            if path.is_file():
                table = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
                tables.append(table.assign(image=image.name)[["image", *table.columns]])
                break
    if not tables:
        raise ValueError(f"{out} holds no objects table (NAME_objects.csv).")
    return pd.concat(tables, ignore_index=True)

