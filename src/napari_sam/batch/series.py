"""An image series: the images of a folder, a plate or a batch run, annotated one by one, with their labels saved in
an output folder in the batch outputs' format and a record of how far each one is.

The output folder is a batch run's: ``NAME_labels.ome.tif`` (or ``.ome.zarr``) and ``NAME_objects.csv`` per image,
so a batch run's output folder opens for correction as it is, and what a person saves is read like a batch run's
results. The series record (:data:`SERIES_FILE`) says, per image, its status (:data:`STATUSES`), the model and
settings used, when it was saved, and whether a person corrected it. A batch run never overwrites an image a person
corrected (:func:`corrected_images`). Every file is written atomically; the folder is held by one session at a time
(:class:`~napari_sam.batch.output_lock.OutputLock`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .files import ImageInput, check_output, find_inputs, open_input, remove_partial, write_atomically
from .output_lock import RECORDS, OutputLock
from .outputs import (
    Calibration,
    LabelsOutput,
    labels_format,
    labels_path,
    object_rows,
    object_table,
    read_calibration,
    table_path,
    write_table,
)

#: The series record's file name, in the output folder.
SERIES_FILE = "napari-sam-series.json"
#: The record's format.
SERIES_FORMAT = 1
#: A batch run's summary, in the output folder (its model and settings describe the images it finished).
RUN_SUMMARY = "napari-sam-run.json"
NOT_STARTED, IN_PROGRESS, DONE, FAILED = "not started", "in progress", "done", "failed"
#: An image's status in the series.
STATUSES = (NOT_STARTED, IN_PROGRESS, DONE, FAILED)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_record(path: Path) -> dict | None:
    """A JSON object file, or None where it is missing or unreadable (every record is written atomically, so an
    unreadable one was not written by napari-sam)."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return values if isinstance(values, dict) else None


def labels_file(out: Path, name: str) -> Path | None:
    """The labels file of image ``name`` in ``out`` (OME-TIFF first, then OME-zarr), or None."""
    for fmt in ("tiff", "zarr"):
        path = labels_path(out, name, fmt)
        if path.exists():
            return path
    return None


def read_labels(path: Path):
    """The labels of a labels file: a numpy array (OME-TIFF) or a lazy zarr array (OME-zarr, its level 0).

    Raises:
        ValueError: the file cannot be read as labels.
    """
    try:
        if path.suffix.lower() == ".zarr":
            import zarr

            return zarr.open_group(str(path), mode="r")["0"]
        import tifffile

        return tifffile.imread(path)
    except Exception as error:  # noqa: BLE001 - any reader's failure: one message naming the file
        raise ValueError(f"Could not read the labels {path}: {error}") from error


def label_rows(labels, n_leading: int) -> list[dict]:
    """The objects table's rows of a labels array (one per object and plane, measured as written; score and
    stability NaN: drawn or corrected by hand)."""
    from scipy import ndimage

    rows = []
    for plane in np.ndindex(*labels.shape[:n_leading]):
        values = np.asarray(labels[plane])
        boxes = ndimage.find_objects(values)
        objects = [(label, (box[0].start, box[1].start, box[0].stop, box[1].stop), float("nan"), float("nan"))
                   for label, box in enumerate(boxes, start=1) if box is not None]
        rows += object_rows(values, plane, objects)
    return rows


def corrected_images(out: Path) -> set[str]:
    """The names of the images of the series in ``out`` that a person corrected (none without a series)."""
    record = read_record(Path(out) / SERIES_FILE) or {}
    return {entry["name"] for entry in record.get("images", [])
            if isinstance(entry, dict) and entry.get("corrected") and "name" in entry}


@dataclass
class SeriesImage:
    """One image of a series and how far it is.

    Attributes:
        item: its input files and name (the name names its outputs).
        status: one of :data:`STATUSES`.
        objects: the number of objects in its labels (None: no labels yet).
        corrected: whether a person saved labels of it.
        saved: when its labels were last saved (ISO 8601, UTC), by a person or a batch run.
        model: the checkpoint its labels were made with (a batch run's, or the last one used on it).
        settings: the settings of the batch run that made its labels, or the series' settings.
        error: why it failed (status ``failed``).
        labels: its labels file's name in the output folder, or None.
    """

    item: ImageInput
    status: str = NOT_STARTED
    objects: int | None = None
    corrected: bool = False
    saved: str | None = None
    model: str | None = None
    settings: dict | None = None
    error: str | None = None
    labels: str | None = None

    @property
    def name(self) -> str:
        return self.item.name

    def to_dict(self) -> dict:
        return {"name": self.name, "inputs": list(self.item.paths), "stack": self.item.stack, "status": self.status,
                "objects": self.objects, "corrected": self.corrected, "saved": self.saved, "model": self.model,
                "settings": self.settings, "error": self.error, "labels": self.labels}


class Series:
    """The images of ``inputs`` annotated into the output folder ``out``, held by this session until :meth:`close`.

    Args:
        inputs: files, folders, globs and zarr, as ``napari-sam segment`` takes them (with ``stack``, each folder
            is one stack of its files).
        out: the output folder (made; not inside an input folder). A batch run's output folder opens as it is.
        model: the checkpoint the session annotates with (recorded with what it saves).
        settings: the series' settings (a batch settings file's dict; recorded with what it saves).
        break_lock: take the folder even though another session's lock is on it (a stale lock).
        channel: the channel of multichannel files (-1: none), as in batch runs.

    Raises:
        ValueError: bad inputs or output folder (as ``napari-sam segment`` says), or the folder is held by another
            session or batch run (:class:`~napari_sam.batch.output_lock.FolderInUse`).
    """

    def __init__(self, inputs: list[str], out: str | Path, *, stack: bool = False, model: str | None = None,
                 settings: dict | None = None, break_lock: bool = False, channel: int = -1):
        self.inputs = [str(spec) for spec in inputs]
        items = find_inputs(self.inputs, stack)
        self.out = check_output(out, self.inputs)
        self.out.mkdir(parents=True, exist_ok=True)
        self.model, self.settings, self.channel = model, settings, channel
        self.lock = OutputLock(self.out, "an annotation session", break_lock)
        remove_partial(self.out)  # what a killed session or run left half-written
        remove_partial(self.out / RECORDS)
        self.images = self._images(items)
        self.write_record()

    def _images(self, items: list[ImageInput]) -> list[SeriesImage]:
        known = {entry.get("name"): entry for entry in (read_record(self.out / SERIES_FILE) or {}).get("images", [])
                 if isinstance(entry, dict)}
        run = read_record(self.out / RUN_SUMMARY) or {}
        images = []
        for item in items:
            entry = known.get(item.name, {})
            image = SeriesImage(item, status=entry.get("status") if entry.get("status") in STATUSES else NOT_STARTED,
                                objects=entry.get("objects"), corrected=bool(entry.get("corrected")),
                                saved=entry.get("saved"), model=entry.get("model"), settings=entry.get("settings"),
                                error=entry.get("error"))
            if image.status == FAILED:
                image.status, image.error = NOT_STARTED, None  # tried again: the file may be fixed
            found = labels_file(self.out, item.name)
            image.labels = None if found is None else found.name
            batch = read_record(self.out / RECORDS / f"{item.name}.json") or {}
            if not image.corrected and found is not None and batch.get("status") == "done":
                image.objects = batch.get("objects")  # a batch run's results, not looked at yet
                image.model, image.settings = run.get("model", image.model), run.get("settings", image.settings)
                image.saved = datetime.fromtimestamp(found.stat().st_mtime, UTC).isoformat(timespec="seconds")
            images.append(image)
        return images

    def __len__(self) -> int:
        return len(self.images)

    def index(self, name: str) -> int:
        return next(i for i, image in enumerate(self.images) if image.name == name)

    def first_to_do(self) -> int:
        """The first image not done (or failed); the last one when every image is."""
        return next((i for i, image in enumerate(self.images) if image.status in (NOT_STARTED, IN_PROGRESS)),
                    len(self.images) - 1)

    def open_image(self, index: int):
        """The image at ``index`` as a lazy array-like (see :func:`~napari_sam.batch.files.open_input`); an image
        that cannot be read is marked failed, with its error, and the ValueError raised again. Opening does not
        start an image (see :meth:`visit`): the next one may be read ahead."""
        image = self.images[index]
        try:
            data = open_input(image.item, self.channel)
            np.asarray(data[(0,) * (len(data.shape) - 2)][:1, :1])  # a corrupt file fails here, not in napari
        except Exception as error:  # noqa: BLE001 - any reader's failure marks the image failed
            message = str(error) if isinstance(error, ValueError) else f"Could not read {image.item.paths[0]}: {error}"
            image.status, image.error = FAILED, message
            self.write_record()
            raise ValueError(message) from error
        return data

    def visit(self, index: int) -> None:
        """A person has the image at ``index`` in front of them: a new one is in progress from now."""
        if self.images[index].status == NOT_STARTED:
            self.set_status(index, IN_PROGRESS)

    def labels(self, index: int):
        """The saved labels of the image at ``index`` (numpy, or a lazy zarr array), or None.

        Raises:
            ValueError: a labels file that cannot be read.
        """
        found = labels_file(self.out, self.images[index].name)
        return None if found is None else read_labels(found)

    def save(self, index: int, labels, *, model: str | None = None) -> Path:
        """Save the labels of the image at ``index`` as a person made them: the labels file and the objects table,
        each written atomically (a zarr labels folder replaced whole), then the record.

        ``labels`` is the image's whole labels array (numpy or zarr); ``model`` the checkpoint in use (None: the
        series'). Returns the labels file.
        """
        image = self.images[index]
        shape = tuple(int(n) for n in labels.shape)
        previous = labels_file(self.out, image.name)
        fmt = ("zarr" if previous.suffix.lower() == ".zarr" else "tiff") if previous is not None else labels_format(
            "auto", image.item.paths[0], shape)
        calibration = read_calibration(image.item.paths[0])
        if image.item.stack and calibration is not None:
            calibration = Calibration("Z" + calibration.axes[-2:], (None, *calibration.scale[-2:]), calibration.unit)
        output = LabelsOutput(labels_path(self.out, image.name, fmt), shape, fmt, calibration)
        if fmt == "zarr":
            for plane in np.ndindex(*shape[:-2]):
                output.array[plane] = np.asarray(labels[plane], dtype=np.uint32)
        else:
            output.array[...] = np.asarray(labels)
        written = output.commit()
        n_leading = len(shape) - 2
        table_format = "parquet" if table_path(self.out, image.name, "parquet").exists() else "csv"
        rows = label_rows(labels, n_leading)
        write_table(table_path(self.out, image.name, table_format), object_table(rows, n_leading), table_format)
        image.objects = len({row["id"] for row in rows})
        image.corrected, image.saved, image.labels, image.error = True, _now(), written.name, None
        image.model = model or self.model or image.model
        image.settings = self.settings if self.settings is not None else image.settings
        if image.status in (NOT_STARTED, FAILED):
            image.status = IN_PROGRESS
        self.write_record()
        return written

    def set_status(self, index: int, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}.")
        image = self.images[index]
        image.status = status
        if status != FAILED:
            image.error = None
        self.write_record()

    def write_record(self) -> Path:
        values = {"napari_sam_series": SERIES_FORMAT, "inputs": self.inputs, "updated": _now(),
                  "images": [image.to_dict() for image in self.images]}
        return write_atomically(self.out / SERIES_FILE, json.dumps(values, indent=1, default=str).encode())

    def close(self) -> None:
        """Let the folder go (another session or a batch run may take it)."""
        self.lock.release()

    def __enter__(self) -> Series:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
