"""mkdocs hook: the benchmarks' results files as tables in the documentation.

A page writes a marker where a benchmark's tables belong::

    <!-- results: encoder -->                      every table of benchmarks/results/encoder.json
    <!-- results: encoder "SAM ViT-B encoder" -->  only the table of that name

and the hook puts the markdown table(s) there, followed by a line saying where and how they were measured
(machine, cores, GPU, date, torch version, the command). The results files are written by the benchmark scripts
(``benchmarks/results.py``) in ``benchmarks/results/`` next to ``mkdocs.yml``. A marker naming a missing file or
table is logged as a warning, so that ``mkdocs build --strict`` fails, and shows as a warning in the page otherwise.
Markers inside fenced code blocks are left alone.

Enabled in ``mkdocs.yml`` with ``hooks: [docs/hooks/benchmark_tables.py]`` (mkdocs >= 1.4).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.benchmark_tables")

MARKER = re.compile(r"<!--\s*results:\s*(?P<file>[\w.-]+)(?:\s+\"(?P<table>[^\"]*)\")?\s*-->")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")

#: Where the results files are, relative to the folder of mkdocs.yml.
RESULTS = Path("benchmarks") / "results"


def results_folder(config) -> Path:
    config_file = config.get("config_file_path") if hasattr(config, "get") else None
    root = Path(config_file).resolve().parent if config_file else Path(__file__).resolve().parents[2]
    return root / RESULTS


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if "results:" not in markdown:
        return markdown
    folder = results_folder(config)
    where = getattr(getattr(page, "file", None), "src_uri", None) or str(page)
    lines, fence = [], None
    for line in markdown.split("\n"):
        opening = FENCE.match(line)
        if fence is not None:  # inside a fenced block until the same fence closes it
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            lines.append(line)
            continue
        if opening:
            fence = opening.group(1)
            lines.append(line)
            continue
        lines.append(MARKER.sub(lambda match: render(match, folder, where), line))
    return "\n".join(lines)


def on_serve(server, config, builder, **kwargs):
    """``mkdocs serve``: rebuild when a results file changes."""
    folder = results_folder(config)
    if folder.is_dir():
        server.watch(str(folder))
    return server


def render(match: re.Match, folder: Path, where: str) -> str:
    name, wanted = match.group("file"), match.group("table")
    path = folder / f"{name}.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return problem(f"{where}: no results file {RESULTS / path.name} for the marker {match.group(0)} (run "
                       f"benchmarks/{name.split('-')[0]}.py, see the performance page)")
    except (OSError, ValueError) as error:
        return problem(f"{where}: the results file {RESULTS / path.name} cannot be read: {error}")
    tables = results.get("tables") or []
    if wanted is not None:
        tables = [table for table in tables if table.get("name") == wanted]
        if not tables:
            names = ", ".join(repr(table.get("name")) for table in results.get("tables") or []) or "none"
            return problem(f"{where}: {RESULTS / path.name} has no table {wanted!r} (its tables: {names})")
    elif not tables:
        return problem(f"{where}: {RESULTS / path.name} holds no tables")
    try:
        parts = [markdown_table(table) for table in tables]
    except (KeyError, TypeError, ValueError) as error:
        return problem(f"{where}: a table of {RESULTS / path.name} is malformed: {error}")
    return "\n\n".join([*parts, provenance(results)]) + "\n"


def problem(message: str) -> str:
    log.warning(message)
    return f'\n!!! warning "Benchmark results missing"\n    {cell(message)}\n'


def cell(value) -> str:
    """A table cell's text: pipes escaped, line breaks made spaces."""
    return str(value).replace("|", r"\|").replace("\r", " ").replace("\n", " ")


def markdown_table(table: dict) -> str:
    columns, rows = table["columns"], table["rows"]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"table {table.get('name')!r}: a row of {len(row)} cells for {len(columns)} columns")
    lines = [f"**{cell(table['name'])}**", ""] if table.get("name") else []
    lines.append("| " + " | ".join(cell(column) for column in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    if table.get("notes"):
        lines += ["", cell(table["notes"])]
    return "\n".join(lines)


def provenance(results: dict) -> str:
    """One line: where, when and how the tables were measured."""
    machine, versions = results.get("machine") or {}, results.get("versions") or {}
    cores = machine.get("cores")
    parts = [machine.get("cpu") or "unknown CPU", f"{cores} cores" if cores else None, machine.get("gpu") or "no GPU",
             (results.get("date") or "")[:10] or None, f"torch {versions['torch']}" if versions.get("torch") else None]
    command = results.get("command", "").replace("`", "'")
    return ("<small>Measured on " + ", ".join(part for part in parts if part)
            + (f"; `{command}`" if command else "") + ".</small>")
