"""The annotations ``napari-sam train`` learns from: a series or batch output folder (each image with its
``NAME_labels.*``), or image and labels files given in pairs. Stacks count plane by plane."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.image import napari_contrast_limits, read_image
from ..core.workflows.training import AnnotatedImage, annotated_planes
from .files import ImageInput, open_input
from .output_lock import RECORDS
from .series import DONE, SERIES_FILE, labels_file, read_labels, read_record


def folder_examples(folder: str | Path, channel: int = -1) -> list[AnnotatedImage]:
    """The annotated images of a series or batch output folder: every image of its series record that a person
    corrected or marked done, else (a batch run's folder) every image the run finished, with its labels file.

    Raises:
        ValueError: a folder that is neither, holds no labels, or whose images cannot be read (named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: give a series or batch output folder, or --images and --labels.")
    entries: list[dict] = []
    series = read_record(folder / SERIES_FILE)
    if series is not None:
        entries = [e for e in series.get("images", []) if isinstance(e, dict)
                   and (e.get("corrected") or e.get("status") == DONE)]
    else:
        for path in sorted((folder / RECORDS).glob("*.json")):
            record = read_record(path) or {}
            if record.get("status") == "done" and record.get("inputs"):
                entries.append(record)
    if not entries:
        raise ValueError(f"{folder} holds no annotated images: neither an image series' ({SERIES_FILE}) images "
                         "corrected or marked done, nor a batch run's finished images.")
    out = []
    for entry in entries:
        name = str(entry.get("name"))
        found = labels_file(folder, name)
        if found is None:
            continue
        # a series lists its paths; a batch record each path with its size and time ([path, bytes, ns])
        paths = tuple(str(p[0] if isinstance(p, list) else p) for p in entry["inputs"])
        item = ImageInput(name, paths, bool(entry.get("stack", False)))
        try:
            image = np.asarray(open_input(item, channel))
        except (OSError, ValueError) as error:
            raise ValueError(f"Could not read the image {name} ({item.paths[0]}): {error}") from error
        out += annotated_planes(image, np.asarray(read_labels(found)), name,
                                contrast_limits=napari_contrast_limits(image, False))
    if not out:
        raise ValueError(f"{folder}: none of its annotated images has a labels file.")
    return out


def paired_examples(images: list[str], labels: list[str]) -> list[AnnotatedImage]:
    """Image files with their labels files, in pairs.

    Raises:
        ValueError: the lists differ in length, or a file cannot be read or does not fit its image (named).
    """
    if len(images) != len(labels):
        raise ValueError(f"--images and --labels go in pairs: {len(images)} image(s) and {len(labels)} labels "
                         "file(s).")
    out = []
    for image_path, labels_path in zip(images, labels):
        try:
            image = np.asarray(read_image(image_path))
        except (OSError, ValueError) as error:
            raise ValueError(f"Could not read the image {image_path}: {error}") from error
        try:
            labels = np.asarray(read_image(labels_path))
        except (OSError, ValueError) as error:
            raise ValueError(f"Could not read the labels {labels_path}: {error}") from error
        rgb = image.ndim == labels.ndim + 1 and image.shape[-1] in (3, 4)
        out += annotated_planes(image, labels, Path(image_path).name, rgb=rgb,
                                contrast_limits=napari_contrast_limits(image, rgb))
    return out
