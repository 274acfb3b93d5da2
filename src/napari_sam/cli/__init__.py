"""The ``napari-sam`` command line: ``demo``, ``models``, the batch runs ``segment`` and ``embed`` (see
:mod:`napari_sam.cli.batch_runs`), the image series' ``annotate`` and ``export`` (see
:mod:`napari_sam.cli.series_commands`), and ``train`` (:mod:`napari_sam.cli.train_command`).

Options of settings (``--tiling``, ``--points-per-side``, ...) are generated from the settings classes of
:mod:`napari_sam.core.settings`, the same ones the docks are generated from (:mod:`napari_sam.cli.options`).
"""

from __future__ import annotations

import argparse
import sys

from ..core.errors import ModelLoadError
from ..core.model import DEFAULT_CHECKPOINT, KNOWN_CHECKPOINTS
from ..demo import DEMO_MODEL, run_demo
from .batch_runs import add_embed_command, add_segment_command
from .series_commands import add_annotate_command, add_export_command
from .train_command import add_train_command


def _demo(args: argparse.Namespace) -> int:
    run_demo(args.model)
    return 0


def _models(args: argparse.Namespace) -> int:
    for name, description in KNOWN_CHECKPOINTS.items():
        print(f"{name:32s} {description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="napari-sam", description="Segment Anything in napari.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="open napari on a sample image with the widget docked")
    demo.add_argument("--model", default=DEMO_MODEL,
                      help=f"bundled name, hub id or folder of a SAM checkpoint (e.g. {DEFAULT_CHECKPOINT})")
    demo.set_defaults(run=_demo)
    models = commands.add_parser("models", help="list the known checkpoints")
    models.set_defaults(run=_models)
    add_embed_command(commands)
    add_segment_command(commands)
    add_annotate_command(commands)
    add_export_command(commands)
    add_train_command(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, PermissionError, ModelLoadError) as error:  # bad input: one clear line, no traceback
        print(f"napari-sam {args.command}: {error}", file=sys.stderr)
        return 2

