"""Results files of the benchmarks: ``benchmarks/results/<name>.json``, from which the documentation's performance
tables are generated (``docs/hooks/benchmark_tables.py``).

A benchmark script adds the ``--results`` option with :func:`add_option`, builds its tables with :func:`table` (cells
already formatted, e.g. ``"7.37 s"``, ``"1.21×"``) and writes them with :func:`write`. The file holds::

    {"benchmark": "encoder", "title": "...", "date": "2026-01-31T12:00:00+00:00",
     "command": "python benchmarks/encoder.py --config vit-l",
     "machine": {"cpu": "...", "cores": 2, "memory_gib": 7.8, "gpu": null, "platform": "...", "torch_threads": 2,
                 "cpu_flags": ["avx2", "avx512_bf16"]},
     "versions": {"python": "...", "torch": "...", "transformers": "...", "numpy": "...", "napari-sam": "..."},
     "tables": [{"name": "...", "columns": ["...", ...], "rows": [["...", ...], ...], "notes": "..."}],
     "figures": {...}}

``figures`` (optional) holds the raw numbers behind the tables, in seconds and bytes.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from napari_sam.batch.files import write_atomically

#: Where the results files live: the documentation reads them from here.
FOLDER = Path(__file__).resolve().parent / "results"

#: CPU features that decide the speed of bf16 weights (reported where the CPU has them).
NOTABLE_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def default_path(name: str) -> Path:
    return FOLDER / f"{name}.json"


def add_option(parser, name: str) -> None:
    """Add ``--results PATH`` (default ``benchmarks/results/<name>.json``) to a benchmark's argument parser."""
    parser.add_argument("--results", type=Path, default=default_path(name), metavar="PATH",
                        help=f"where to write the results file (default: benchmarks/results/{name}.json)")


def table(name: str, columns: list[str], rows: list[list], notes: str = "") -> dict:
    """One table of a results file; every row has one cell per column, each a string (the formatted figure)."""
    rows = [[str(cell) for cell in row] for row in rows]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"table {name!r}: a row of {len(row)} cells for {len(columns)} columns: {row}")
    return {"name": name, "columns": [str(column) for column in columns], "rows": rows, "notes": notes}


def write(path: Path | str, name: str, title: str, tables: list[dict], figures: dict | None = None,
          packages: tuple[str, ...] = ()) -> Path:
    """Write the results file at ``path`` atomically (as batch runs write their outputs).

    ``packages``: distributions whose versions are recorded besides python, torch, transformers, numpy and
    napari-sam (``"napari"`` where the benchmark uses it)."""
    path = Path(path)
    content = {"benchmark": name, "title": title, "date": datetime.now(UTC).isoformat(timespec="seconds"),
               "command": command(name), "machine": machine(), "versions": versions(packages), "tables": tables}
    if figures is not None:
        content["figures"] = figures
    text = json.dumps(content, indent=2, ensure_ascii=False, default=_plain) + "\n"
    write_atomically(path, text.encode())
    print(f"results written to {path}")
    return path


def seconds(value: float) -> str:
    """A duration with three significant figures: ``"378 s"``, ``"8.38 s"``, ``"44.1 ms"``."""
    if value >= 1:
        return f"{value:.0f} s" if value >= 100 else f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"
    milliseconds = value * 1000
    return f"{milliseconds:.0f} ms" if milliseconds >= 100 else f"{milliseconds:.1f} ms" if milliseconds >= 10 \
        else f"{milliseconds:.2f} ms"


def size(nbytes: float, sign: str = "+") -> str:
    """A memory size: ``"+329 MiB"``, ``"+1.72 GiB"`` (``sign`` prefixed)."""
    if abs(nbytes) >= 2**30:
        return f"{sign}{nbytes / 2**30:.2f} GiB"
    return f"{sign}{nbytes / 2**20:.0f} MiB"


def ratio(value: float) -> str:
    """A ratio: ``"1.21×"``, ``"12.6×"``, ``"262×"``."""
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×" if value < 100 else f"{value:.0f}×"


def _plain(value):
    """numpy scalars and arrays (and anything else) in a form JSON holds."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def command(name: str, argv: list[str] | None = None) -> str:
    """The command line as ``python benchmarks/<name>.py ARGS``, with paths made relative to the repository's folder,
    or cut to their name where they lie elsewhere, so that no machine's paths are recorded."""
    argv = sys.argv[1:] if argv is None else argv
    kept = []
    for argument in argv:
        option, equals, value = argument.partition("=") if argument.startswith("--") else ("", "", argument)
        kept.append(option + equals + _portable(value))
    return shlex.join(["python", f"benchmarks/{name}.py", *kept])


def _portable(value: str) -> str:
    if not os.path.isabs(value):
        return value
    base = FOLDER.parent.parent.parent  # the folder that holds the repository (and, e.g., a shared tools folder)
    try:
        return os.path.relpath(value, FOLDER.parent.parent) if Path(value).resolve().is_relative_to(base) \
            else Path(value).name
    except ValueError:  # another drive
        return Path(value).name


def machine() -> dict:
    """CPU model, logical cores this process may use, memory, GPU (or None), platform and torch threads."""
    import torch

    cpu, flags = "", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "Hardware") and not cpu:
                    cpu = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu or platform.processor() or platform.machine(), "cores": cores,
            "memory_gib": None if memory is None else round(memory, 1), "gpu": gpu, "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(), "cpu_flags": [f for f in NOTABLE_FLAGS if f in flags]}


def versions(packages: tuple[str, ...] = ()) -> dict:
    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "numpy", "napari-sam", *packages):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found
