"""The ``napari-sam`` command line: ``napari-sam demo``, ``napari-sam models``."""

from __future__ import annotations

import argparse
import sys

from .core.model_loading import DEFAULT_CHECKPOINT, KNOWN_CHECKPOINTS

DEMO_MODEL = "tiny-cells"


def open_demo(viewer, model: str = DEMO_MODEL):
    """Put the demo into ``viewer``: the synthetic-cells sample and the docked widget, loading ``model``.

    Returns the widget."""
    viewer.open_sample("napari-sam", "synthetic-cells")
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    widget.model_picker.native.setCurrentText(model)
    widget.load_model()
    return widget


def _demo(args: argparse.Namespace) -> int:
    import napari

    open_demo(napari.Viewer(title="napari-sam demo"), args.model)
    napari.run()
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
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
