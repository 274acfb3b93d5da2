"""Running a batch on dask.distributed: a ``LocalCluster`` sized to the machine, or an existing scheduler.

:func:`run_batch` checks everything it can before starting any worker (inputs, output folder, model, prompts),
skips the images a previous run finished with the same settings, submits the rest as tasks, follows them with a
progress bar, and writes a run summary. A failed image (an unreadable file, say) is reported and the others go on;
a worker that dies has its tasks run again elsewhere by the scheduler, and since every output is written
atomically and computed the same way, the result is the same as a clean run's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..core.embeddings import DEFAULT_STORE_GB, EmbeddingStore, store_bytes
from ..core.errors import ModelLoadError
from ..core.model import KNOWN_CHECKPOINTS, read_checkpoint_json, require_config, resolve_checkpoint
from . import tasks
from .config import RunConfig
from .files import check_output, check_readable, find_inputs, remove_partial, write_atomically
from .output_lock import RECORDS, OutputLock
from .outputs import check_table_format
from .prompts_file import PromptsFile
from .series import corrected_images
from .tasks import Job, ModelPlugin

#: Seconds to wait for an existing scheduler before giving up.
CONNECT_TIMEOUT = 5
#: The run summary's file name in the output folder.
SUMMARY = "napari-sam-run.json"
#: Bytes of memory per CPU worker the default cluster plans for (the model, an image and its objects).
MEMORY_PER_WORKER = 4 << 30
#: CPU cores per worker of the default cluster (a ViT's encoder uses a few cores well; more workers add memory).
CORES_PER_WORKER = 4


@dataclass
class RunSummary:
    """What a run did: ``values`` is the summary written to ``path`` (settings, model, versions, cluster, timings,
    one entry per image; None: an embed run without an output folder writes none); ``failures`` the images that
    failed, with their errors."""

    path: Path | None
    values: dict
    failures: list[dict] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 when every image was done or skipped, 1 when any failed."""
        return 1 if self.failures else 0


def check_model(name: str, what: str = "model") -> None:
    """Refuse, within a second, a checkpoint that is neither bundled, nor a folder with a config, nor on the hub
    (or its cache, offline)."""
    resolved = resolve_checkpoint(name)
    require_config(resolved, what)
    if not Path(resolved).is_dir() and read_checkpoint_json(resolved, "config.json") is None:
        raise ModelLoadError(f"No {what} checkpoint {name!r}: not a bundled name, not a folder holding a checkpoint, "
                             f"and not found on the hub (or in its cache when offline). Known names: "
                             f"{', '.join(KNOWN_CHECKPOINTS)}.")


def default_layout(workers: int | None = None) -> tuple[int, int]:
    """(worker processes, torch threads each) for a local cluster: one worker per GPU where there are GPUs, else
    one per few cores within the memory (``workers`` fixes their number)."""
    import psutil
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers is None:
        if torch.cuda.is_available():
            workers = torch.cuda.device_count()
        else:
            by_memory = psutil.virtual_memory().total // MEMORY_PER_WORKER
            workers = max(1, min(cores // CORES_PER_WORKER, by_memory))
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    return workers, max(1, cores // workers)


@contextlib.contextmanager
def open_client(scheduler: str | None, workers: int | None):
    """A dask client: of the scheduler at ``scheduler``, or of a new ``LocalCluster`` of worker processes.
    Yields ``(client, threads per worker or None)``.

    Raises:
        ValueError: the scheduler cannot be reached within :data:`CONNECT_TIMEOUT` seconds.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            _probe(scheduler)
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT}s")
        except (OSError, TimeoutError, ValueError) as error:
            raise ValueError(f"Could not reach the dask scheduler at {scheduler} within {CONNECT_TIMEOUT} s "
                             f"({type(error).__name__}: {error}). Check the address, and that the scheduler runs."
                             ) from None
        with client:
            yield client, None
        return
    count, threads = default_layout(workers)
    with LocalCluster(n_workers=count, threads_per_worker=1, processes=True, silence_logs=logging.CRITICAL) as cluster:
        with Client(cluster) as client:
            yield client, threads


def _probe(address: str) -> None:
    """Fail at once when nothing listens at a ``tcp://host:port`` address (the client would retry until its
    timeout)."""
    import socket

    host, _, port = address.removeprefix("tcp://").rpartition(":")
    if address.startswith("tcp://") and port.isdigit():
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            pass


def run_batch(inputs: list[str], output: str | None, config: RunConfig | None = None, *, prompts: str | None = None,
              stack: bool = False, scheduler: str | None = None, workers: int | None = None,
              overwrite: bool = False, store: str | None = None, store_gb: float = DEFAULT_STORE_GB,
              progress: bool = True, log=print) -> RunSummary:
    """Run ``config`` over every image of ``inputs`` and write the outputs into the folder ``output`` (mode ``embed``:
    fill the embedding store, and keep the run's records in ``output`` when one is given).

    Args:
        inputs: files, folders or globs (see :func:`~napari_sam.batch.files.find_inputs`); with ``stack`` each
            folder is one stack of its files.
        output: the output folder (created; not inside an input folder); None only in mode ``embed``.
        config: the run's settings (None: the defaults, segment everything).
        prompts: a prompts file (CSV, JSON or GeoJSON; see :mod:`~napari_sam.batch.prompts_file`), needed by the
            modes ``prompts`` and ``propagate``.
        scheduler: the address of a running dask scheduler; None starts a ``LocalCluster`` of ``workers`` worker
            processes (None: sized to the machine).
        overwrite: redo images that are finished, and replace outputs that other settings made.
        store: an embedding store folder to fill and read (mode ``embed``: default the per-user store the docks
            read); ``store_gb`` its size cap.
        progress: show a progress bar; log: where messages go.

    Returns a :class:`RunSummary`, also written to ``output``/napari-sam-run.json when there is an output folder.

    Raises:
        ValueError: bad inputs, output folder, settings or prompts file, an unreachable scheduler, or another run
            writing into ``output``.
        PermissionError: a store folder that cannot be written.
        ModelLoadError: a checkpoint that does not exist.
    """
    config = config or RunConfig()
    batch = config.batch
    cap = store_bytes(store_gb)  # a bad cap is refused before any worker starts
    started, wall = time.perf_counter(), datetime.now(UTC)
    items = find_inputs(inputs, stack)
    if output is None and batch.mode != "embed":
        raise ValueError(f"A {batch.mode} run needs an output folder (--out FOLDER).")
    out = None if output is None else check_output(output, inputs)
    check_model(batch.model)
    if batch.video_model:
        check_model(batch.video_model, "video model")
    check_table_format(batch.table_format)
    config = config.resolved()
    prompted = batch.mode in ("prompts", "propagate")
    if prompted and not prompts:
        raise ValueError(f"Mode {batch.mode} needs a prompts file (--prompts FILE).")
    prompt_file = PromptsFile(prompts) if prompted else None
    if batch.mode == "embed" and store is None:
        store = str(EmbeddingStore().root)
    elif store is not None:
        EmbeddingStore(store, max_bytes=cap)  # a folder that cannot hold a store is refused now, not on the workers
    with contextlib.nullcontext() if out is None else OutputLock(out, "a batch run"):
        images, jobs = _triage(items, out, config, prompt_file, overwrite)
        if prompt_file is not None:
            unused = set(prompt_file.by_image) - {name for item in items for name in (item.name, _file_name(item))}
            if unused:
                log(f"The prompts file names images that are not inputs: {', '.join(sorted(unused))}.")
        cluster = {}
        if jobs:
            log(f"{len(jobs)} image(s) to do; {len(items) - len(jobs)} finished before, corrected by hand, without "
                "prompts or unreadable.")
            with open_client(scheduler, workers) as (client, threads):
                cluster = {"scheduler": client.scheduler.address, "workers": len(client.scheduler_info()["workers"]),
                           "threads_per_worker": threads, "dashboard": _dashboard(client)}
                if cluster["dashboard"]:
                    log(f"Dashboard: {cluster['dashboard']}")
                client.register_plugin(ModelPlugin(config, threads, store, cap))
                images.update(_run_jobs(client, jobs, batch.mode, batch.tiles_per_task, progress))
        else:
            kinds = [entry["status"] for entry in images.values()]
            told = ", ".join(f"{kinds.count(status)} {status}" for status in ("skipped", "kept", "failed",
                                                                              "no prompts") if status in kinds)
            log(f"Nothing to do for the {len(items)} image(s): {told}.")
        entries = [images[item.name] for item in items]
        values = {"napari_sam_run": 1, "started": wall.isoformat(timespec="seconds"),
                  "seconds": round(time.perf_counter() - started, 3), "inputs": list(inputs),
                  "output": None if out is None else str(out), "mode": batch.mode, "model": batch.model,
                  "settings": config.to_dict(), "prompts": prompts, "store": store, "cluster": cluster,
                  "versions": _versions(),
                  "counts": {status: sum(e["status"] == status for e in entries)
                             for status in ("done", "skipped", "kept", "failed", "no prompts")},
                  "images": entries}
        failures = [e for e in entries if e["status"] == "failed"]
        summary = None if out is None else write_atomically(out / SUMMARY,
                                                             json.dumps(values, indent=1, default=str).encode())
        return RunSummary(summary, values, failures)


def _triage(items, out: Path | None, config: RunConfig, prompt_file: PromptsFile | None, overwrite: bool):
    """``(entries of the images that need no task, by name; the jobs of the others)``: an image a person corrected
    in the image series is kept (whatever ``overwrite`` says); an unreadable file fails here, before any worker
    starts; an image without prompts, or finished before with the same settings, is not done again; another run's
    outputs are not replaced without ``overwrite``."""
    corrected = set()
    if out is not None:
        remove_partial(out), remove_partial(out / RECORDS)
        corrected = corrected_images(out)
    images, jobs = {}, []
    for item in items:
        mine = () if prompt_file is None else tuple(prompt_file.for_image(_file_name(item), item.name))
        job = Job(item, None if out is None else str(out), config, mine)
        if item.name in corrected:  # whatever the options: a person's work is never overwritten
            images[item.name] = _entry(job, "kept", reason="corrected by hand in the image series: kept as it is")
            continue
        try:
            check_readable(item, config.batch.channel)
        except ValueError as error:
            images[item.name] = _entry(job, "failed", error=str(error))
            continue
        state, record = _state(job)
        if prompt_file is not None and not mine:
            images[item.name] = _entry(job, "no prompts", error="the prompts file has no prompts for this image")
        elif state == "done" and not overwrite:
            images[item.name] = _entry(job, "skipped", **record)
        elif state == "foreign" and not overwrite:
            images[item.name] = _entry(job, "failed", error="outputs of other settings, prompts or input files are "
                                       "there already; pass --overwrite to replace them, or choose another folder")
        else:
            jobs.append(job)
    return images, jobs


def _file_name(item) -> str:
    return Path(item.paths[0]).parent.name if item.stack else Path(item.paths[0]).name


def _state(job) -> tuple[str, dict]:
    """``(done`` (this run's outputs are there), ``foreign`` (another run's are) or ``new``, the record)."""
    path = job.record_path()
    if path is None or not path.is_file():
        return "new", {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return "new", {}  # a record is written atomically: an unreadable one was not written by a run
    identity = job.identity()
    same = all(record.get(key) == json.loads(json.dumps(value)) for key, value in identity.items())
    present = all((job.folder / name).exists() for name in record.get("outputs", []))
    return ("done" if same and present else "foreign" if present else "new"), record


def _entry(job, status: str, /, **values) -> dict:
    """An image's line of the summary: its record (or error), its input files and ``status``."""
    values = {key: value for key, value in values.items() if key not in ("name", "status")}
    return {"name": job.name, "status": status, "inputs": list(job.item.paths), **values}


def _dashboard(client) -> str | None:
    try:
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard (bokeh missing, or the scheduler runs without one)
        return None


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("napari-sam", "torch", "transformers", "numpy", "dask", "distributed", "zarr", "tifffile"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def _run_jobs(client, jobs, mode: str, per_task: int, progress: bool) -> dict:
    """Submit every job's tasks and collect a record (or a failure) per image."""
    from distributed import as_completed
    from tqdm import tqdm

    queue, roles, results, by_job = as_completed(), {}, {}, {}

    def submit(function, job, *args, role):
        future = client.submit(function, job, *args, pure=False,
                               key=f"{function.__name__}-{job.name}-{uuid.uuid4().hex[:8]}")
        roles[future.key] = (role, job)
        by_job.setdefault(job.name, []).append(future)
        queue.add(future)
        return future

    staged = mode in ("everything", "embed")
    for job in jobs:
        submit(tasks.prepare if staged else tasks.segment_prompted, job, role="prepare" if staged else "finish")
    bar = tqdm(total=len(jobs), unit="task", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    with bar:
        for future in queue:
            role, job = roles.pop(future.key)
            bar.update(1)
            if job.name in results:
                continue  # the image failed already
            if future.status != "finished":
                error = future.exception()
                results[job.name] = _entry(job, "failed", error=f"{type(error).__name__}: {error}")
                client.cancel([f for f in by_job.pop(job.name, []) if not f.done()])  # its other tasks are moot
                continue
            if role == "prepare" and isinstance(future.result(), dict):  # a small image, done at once
                results[job.name] = _entry(job, "done", **future.result())
            elif role == "prepare":
                prepared = future.result()
                part = tasks.segment_part if mode == "everything" else tasks.embed_part
                parts = [submit(part, job, prepared, plane, frames, role="part")
                         for plane, frames in prepared.groups(per_task)]
                finish = tasks.finish_everything if mode == "everything" else tasks.finish_embed
                submit(finish, job, prepared, *parts, role="finish")
                bar.total += len(parts) + 1
                bar.refresh()
            elif role == "finish":
                results[job.name] = _entry(job, "done", **future.result())
            if job.name in results:
                by_job.pop(job.name, None)
    return results
