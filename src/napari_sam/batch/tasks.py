"""The work of a batch run, as the tasks its workers execute: each worker loads the model once (:class:`ModelPlugin`)
and every task of that worker uses it.

Segment everything and embed run in three steps per image: :func:`prepare` (open the image, decide its contrast
limits and frames), then one task per plane and group of frames (a large image's tiles are spread over the
workers), then :func:`finish_everything` (merge, paint, write) or :func:`finish_embed`. Prompts and propagation
run one task per image (:func:`segment_prompted`). Every output is written under a temporary name and renamed;
the image's record is written last, so an image is finished exactly when its record exists.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from distributed import WorkerPlugin

from ..core.embeddings import EmbeddingStore
from ..core.image import ArrayView, PlaneWriter, is_rgb, napari_contrast_limits, plane_of, planes
from ..core.memory import reuse_freed_memory
from ..core.model import load_video_model
from ..core.predictor import Predictor
from ..core.workflows import (
    frame_count,
    frame_stability,
    merge_frames,
    predict_objects,
    propagate_objects,
    propagate_video_objects,
    recover_cut_objects,
    segment_frames,
)
from .config import RunConfig
from .files import ImageInput, open_input, write_atomically
from .output_lock import RECORDS
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
from .prompts_file import FilePrompt, PromptsFile

#: The name the model plugin is registered under on every worker.
PLUGIN = "napari-sam-model"


class ModelPlugin(WorkerPlugin):
    """Loads the run's model once per worker, on first use, on the worker's GPU where there are GPUs.

    Args:
        config: the run's settings (model, device, precision, tiling).
        threads: torch threads per worker (None: torch's default).
        store: folder of an embedding store to attach, or None; store_bytes: its size cap.
    """

    name = PLUGIN

    def __init__(self, config: RunConfig, threads: int | None, store: str | None, store_bytes: int):
        self.config, self.threads, self.store, self.store_bytes = config, threads, store, store_bytes

    def setup(self, worker=None):
        self.worker_name = str(getattr(worker, "name", "0"))
        self._lock = threading.Lock()
        self._predictor = self._video = None
        self.loads = 0
        reuse_freed_memory()  # undo the allocator setting dask starts workers with (twice as fast)
        logging.getLogger("tifffile").setLevel(logging.ERROR)  # a corrupt file is reported in the summary
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        if self.threads:
            torch.set_num_threads(self.threads)

    def device(self) -> str:
        """``auto`` on a machine with GPUs: the worker's own GPU (by its number, else its name)."""
        device = self.config.batch.device
        if device == "auto" and torch.cuda.is_available():
            name = self.worker_name.rsplit("-", 1)[-1]
            index = int(name) if name.isdigit() else sum(map(ord, self.worker_name))
            return f"cuda:{index % torch.cuda.device_count()}"
        return device

    def predictor(self):
        with self._lock:
            if self._predictor is None:
                batch = self.config.batch
                store = None if self.store is None else EmbeddingStore(self.store, max_bytes=self.store_bytes)
                self._predictor = Predictor.from_pretrained(batch.model, device=self.device(), dtype=batch.precision,
                                                            tiling=self.config.tiling, store=store)
                self.loads += 1
            return self._predictor

    def video_model(self):
        """(model, geometry) of the run's video checkpoint, loaded once."""
        with self._lock:
            if self._video is None:
                model, geometry, _ = load_video_model(self.config.batch.video_model, device=self.device())
                self._video = (model, geometry)
            return self._video


def _plugin() -> ModelPlugin:
    from distributed import get_worker

    return get_worker().plugins[PLUGIN]


@dataclass(frozen=True)
class Job:
    """One image of a run: what to read, where to write, with which settings (and its prompts)."""

    item: ImageInput
    output: str | None
    config: RunConfig
    prompts: tuple[FilePrompt, ...] = ()

    @property
    def name(self) -> str:
        return self.item.name

    @property
    def folder(self) -> Path:
        """The output folder (runs that write labels always have one)."""
        if self.output is None:
            raise ValueError(f"A {self.config.batch.mode} run needs an output folder.")
        return Path(self.output)

    def record_path(self) -> Path | None:
        """Where the record of the finished image is kept (None: a run without an output folder keeps none)."""
        return None if self.output is None else Path(self.output) / RECORDS / f"{self.name}.json"

    def identity(self) -> dict:
        """What the outputs were made from: the settings, the input files' sizes and times, and the prompts. A
        record with another identity is not this run's."""
        return {"config": self.config.digest(), "inputs": self.item.signature(),
                "prompts": PromptsFile.digest(list(self.prompts))}


@dataclass(frozen=True)
class Prepared:
    """An opened image: shape, whether its last axis is colour, its planes (leading indices), the contrast limits
    every plane uses (None: each plane's percentiles), how many frames segment everything decodes per plane, and its
    pixel size."""

    shape: tuple[int, ...]
    rgb: bool
    planes: tuple[tuple[int, ...], ...]
    contrast_limits: tuple[float, float] | None
    n_frames: int
    calibration: Calibration | None
    started: float

    @property
    def labels_shape(self) -> tuple[int, ...]:
        return self.shape[:-1] if self.rgb else self.shape

    def groups(self, per_task: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """(plane, frame indices) of each task, plane by plane."""
        return [(plane, tuple(range(start, min(start + per_task, self.n_frames))))
                for plane in self.planes for start in range(0, self.n_frames, per_task)]


def _contrast(job: Job, data, rgb: bool) -> tuple[float, float] | None:
    batch = job.config.batch
    fixed = batch.contrast_limits()
    if fixed is not None or batch.contrast == "percentiles":
        return fixed
    in_memory = job.item.stack or Path(job.item.paths[0]).suffix.lower() != ".zarr"
    return napari_contrast_limits(data, rgb, in_memory=in_memory)


def _open(job: Job):
    data = open_input(job.item, job.config.batch.channel)
    shape = tuple(int(n) for n in data.shape)
    rgb = is_rgb(shape)
    if len(shape) - rgb < 2:
        raise ValueError(f"{job.item.paths[0]} has shape {shape}: not an image.")
    return data, shape, rgb


def prepare(job: Job) -> Prepared | dict:
    """Open the image and decide what the following tasks share (runs on a worker). An image that is one task's
    work (one plane in one group of frames) is done here at once: its record is returned instead."""
    started = time.time()
    data, shape, rgb = _open(job)
    calibration = read_calibration(job.item.paths[0])
    limits = _contrast(job, data, rgb)
    first = planes(shape, rgb)[0]
    predictor = _plugin().predictor()
    if job.config.batch.mode == "embed":  # the frames the predictor embeds (tiles, or the whole image)
        count = len(predictor.frames(plan=predictor.plan(plane_of(data, first), limits, rgb)))
    else:  # the frames segment everything decodes (tiles, or the whole image and its crops)
        count = frame_count(predictor, plane_of(data, first), job.config.everything, contrast_limits=limits, rgb=rgb)
    prepared = Prepared(shape, rgb, tuple(planes(shape, rgb)), limits, count, calibration, started)
    groups = prepared.groups(job.config.batch.tiles_per_task)
    if len(groups) > 1:
        return prepared
    if job.config.batch.mode == "embed":
        return finish_embed(job, prepared, embed_part(job, prepared, *groups[0], data=data))
    return finish_everything(job, prepared, segment_part(job, prepared, *groups[0], data=data), data=data)


def segment_part(job: Job, prepared: Prepared, plane: tuple[int, ...], frames: tuple[int, ...], data=None):
    """Segment everything in some frames of one plane (runs on a worker; ``data``: the image when it is open)."""
    data = _open(job)[0] if data is None else data
    return segment_frames(_plugin().predictor(), plane_of(data, plane), job.config.everything, frames,
                          contrast_limits=prepared.contrast_limits, rgb=prepared.rgb)


def embed_part(job: Job, prepared: Prepared, plane: tuple[int, ...], frames: tuple[int, ...],
               data=None) -> tuple[int, int, str | None]:
    """Embed some frames of one plane into the store (runs on a worker; ``data``: the image when it is open).
    Returns ``(how many ran the encoder, how many the store holds now, the error of a write of these frames that
    failed, or None)``."""
    data = _open(job)[0] if data is None else data
    predictor = _plugin().predictor()
    plan = predictor.plan(plane_of(data, plane), prepared.contrast_limits, prepared.rgb)
    all_frames = predictor.frames(plan=plan)
    mine = [all_frames[i] for i in frames]
    failed_before = predictor.store_failures[0]
    computed = predictor.embed_frames(mine, plan)
    failed, error = predictor.store_failures
    return computed, predictor.stored_frames(mine, plan), error if failed > failed_before else None


def _labels_output(job: Job, shape: tuple[int, ...], calibration) -> LabelsOutput:
    fmt = labels_format(job.config.batch.labels_format, job.item.paths[0], shape)
    if job.item.stack and calibration is not None:
        calibration = Calibration("Z" + calibration.axes[-2:], (None, *calibration.scale[-2:]), calibration.unit)
    return LabelsOutput(labels_path(job.folder, job.name, fmt), shape, fmt, calibration)


def _finish(job: Job, labels: LabelsOutput, rows: list[dict], n_leading: int, started: float, **extra) -> dict:
    """Write the labels, the table and (last) the record of a finished image; returns the record."""
    labels_file = labels.commit()
    fmt = job.config.batch.table_format
    table = write_table(table_path(job.folder, job.name, fmt), object_table(rows, n_leading), fmt)
    return _record(job, started, outputs=[labels_file.name, table.name], objects=len(rows), **extra)


def _record(job: Job, started: float, **values) -> dict:
    """Write the record of a finished image (``started``: when its first task began, ``time.time()``)."""
    record = {"name": job.name, "status": "done", **job.identity(), **values,
              "seconds": round(time.time() - started, 3), "worker": _plugin().worker_name}
    path = job.record_path()
    if path is not None:
        write_atomically(path, json.dumps(record, indent=1).encode())
    return record


def finish_everything(job: Job, prepared: Prepared, *parts, data=None) -> dict:
    """Merge each plane's parts (with the objects that no tile holds whole, recovered here), paint the labels (ids
    go on from plane to plane) and write the outputs (``data``: the image when it is open)."""
    groups = prepared.groups(job.config.batch.tiles_per_task)
    labels = _labels_output(job, prepared.labels_shape, prepared.calibration)
    rows, next_id = [], 1
    for plane in prepared.planes:
        mine = [part for (where, _), part in zip(groups, parts) if where == plane]
        if any(len(part.cut) for part in mine):
            data = _open(job)[0] if data is None else data
            mine.append(recover_cut_objects(_plugin().predictor(), plane_of(data, plane), mine,
                                            job.config.everything, contrast_limits=prepared.contrast_limits,
                                            rgb=prepared.rgb))
        writer = PlaneWriter(labels.array, plane)
        result = merge_frames(mine, job.config.everything, out=writer, first_id=next_id)
        found = [(next_id + k, (obj.rows.start, obj.cols.start, obj.rows.stop, obj.cols.stop), score, stability)
                 for k, (obj, score, stability) in enumerate(zip(result.objects, result.scores,
                                                                 result.stability_scores))]
        rows += object_rows(writer, plane, found)
        next_id += len(result.objects)
    return _finish(job, labels, rows, len(prepared.labels_shape) - 2, prepared.started)


def finish_embed(job: Job, prepared: Prepared, *parts) -> dict:
    """Record an embedded image; an image whose embeddings the store does not all hold fails, naming why."""
    frames = len(prepared.planes) * prepared.n_frames
    stored = sum(part[1] for part in parts)
    if stored < frames:
        error = next((part[2] for part in parts if part[2]), None)
        raise OSError(f"the embedding store kept {stored} of the image's {frames} embeddings"
                      + (f" (it could not write: {error})" if error else " (its size cap is too small for them)"))
    return _record(job, prepared.started, outputs=[], frames=frames, encoder_runs=int(sum(p[0] for p in parts)))


def _paint(writer, mask: np.ndarray, row0: int, col0: int, label: int) -> tuple[int, int, int, int]:
    """Paint ``label`` where ``mask`` (its top-left at (row0, col0)) is set and the labels are still 0 (objects
    never overwrite earlier ones); returns the end-exclusive box painted into."""
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return row0, col0, row0, col0
    box = (row0 + rows.min(), col0 + cols.min(), row0 + rows.max() + 1, col0 + cols.max() + 1)
    region = writer[box[0]: box[2], box[1]: box[3]]
    inside = mask[box[0] - row0: box[2] - row0, box[1] - col0: box[3] - col0]
    region[inside & (region == 0)] = label
    writer[box[0]: box[2], box[1]: box[3]] = region
    return tuple(int(v) for v in box)


class AxisView(ArrayView):
    """The slices of ``data`` along leading axis ``axis`` with the other leading indices of ``plane`` fixed:
    shape (n, H, W[, C]); ``view[i]`` reads one slice."""

    def __init__(self, data, plane: tuple[int, ...], axis: int):
        self.data, self.plane, self.axis = data, plane, axis
        self.shape = (int(data.shape[axis]), *(int(n) for n in data.shape[len(plane):]))
        self.dtype = np.dtype(data.dtype)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        index = self.plane[: self.axis] + (key[0],) + self.plane[self.axis + 1:]
        return np.asarray(self.data[index + key[1:]])


def _check_planes(job: Job, shape: tuple[int, ...], rgb: bool) -> int:
    n_leading = len(shape) - (3 if rgb else 2)
    for prompt in job.prompts:
        if len(prompt.plane) != n_leading or any(not 0 <= p < n for p, n in zip(prompt.plane, shape)):
            raise ValueError(f"object {prompt.object_id}: plane {list(prompt.plane)} is not a plane of an image of "
                             f"shape {shape} ({n_leading} leading axes: give {n_leading} plane index(es)).")
    return n_leading


def segment_prompted(job: Job) -> dict:
    """Segment (mode ``prompts``) or propagate (mode ``propagate``) each prompted object (runs on a worker)."""
    started = time.time()
    data, shape, rgb = _open(job)
    n_leading = _check_planes(job, shape, rgb)
    limits = _contrast(job, data, rgb)
    predictor = _plugin().predictor()
    labels = _labels_output(job, shape[:-1] if rgb else shape, read_calibration(job.item.paths[0]))
    propagating = job.config.batch.mode == "propagate"
    if propagating:
        axis = _propagation_axis(job, n_leading)
    rows = []
    for plane in sorted({p.plane for p in job.prompts}):
        prompts = [p for p in job.prompts if p.plane == plane]
        with predictor.locked():
            predictor.set_image(plane_of(data, plane), contrast_limits=limits, rgb=rgb)
            results = predict_objects(predictor, [p.prompt for p in prompts])
        if propagating:  # the plane's objects go through the stack together, in prompt order
            first = np.zeros(shape[n_leading: n_leading + 2], dtype=np.uint32)  # the plane's (H, W)
            for prompt, result in zip(prompts, results):
                frame = result.frame
                _paint(first, result.masks[0], frame.row0, frame.col0, prompt.object_id)
            rows += _propagated(job, predictor, data, plane, axis, first, limits, rgb, labels)
            continue
        writer = PlaneWriter(labels.array, plane)
        for prompt, result in zip(prompts, results):
            frame = result.frame
            box = _paint(writer, result.masks[0], frame.row0, frame.col0, prompt.object_id)
            stability = float(frame_stability(torch.from_numpy(result.logits[:1]), predictor.geometry, frame,
                                              job.config.everything.stability_score_offset)[1][0])
            rows += object_rows(writer, plane, [(prompt.object_id, box, result.scores[0], stability)])
    return _finish(job, labels, rows, n_leading, started)


def _propagation_axis(job: Job, n_leading: int) -> int:
    if n_leading == 0:
        raise ValueError(f"{job.item.paths[0]} is a 2D image: propagation needs a stack (use mode prompts).")
    axis = job.config.batch.stack_axis
    if not -n_leading <= axis < n_leading:
        raise ValueError(f"stack_axis {axis} is not one of the image's {n_leading} leading axes.")
    seen: dict[int, tuple[int, ...]] = {}
    for prompt in job.prompts:
        other = seen.setdefault(prompt.object_id, prompt.plane)
        if other != prompt.plane:
            raise ValueError(f"object {prompt.object_id} is prompted on planes {list(other)} and "
                             f"{list(prompt.plane)}: propagation starts from one plane per object.")
    return axis % n_leading


def _propagated(job, predictor, data, plane, axis, first, limits, rgb, labels) -> list[dict]:
    """Propagate every object of ``first`` (the labels of ``plane``) along ``axis`` at once; paints them and returns
    their rows (one per object and plane)."""
    volume = AxisView(data, plane, axis)
    settings = job.config.propagation
    options = dict(contrast_limits=limits, rgb=rgb)
    if job.config.batch.video_model:
        model, geometry = _plugin().video_model()
        result = propagate_video_objects(model, volume, plane[axis], 0, first, geometry=geometry, settings=settings,
                                         **options)
    else:
        result = propagate_objects(predictor, volume, plane[axis], 0, first, settings, **options)
    rows = []
    for index in range(len(result.labels)):
        found = [(object_id, scores[index]) for object_id, scores in result.scores.items()
                 if np.isfinite(scores[index])]
        if not found:
            continue
        where = plane[:axis] + (index,) + plane[axis + 1:]
        writer = PlaneWriter(labels.array, where)
        objects = [(object_id, _paint(writer, result.labels[index] == object_id, 0, 0, object_id), score,
                    float("nan")) for object_id, score in found]
        rows += object_rows(writer, where, objects)
    return rows
