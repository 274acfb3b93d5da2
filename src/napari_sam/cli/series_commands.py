"""The image series' commands: ``napari-sam annotate`` opens napari on a series of images (or a batch run's output
folder) to annotate and correct image by image, and ``napari-sam export`` writes a series or batch output folder as
COCO instance annotations and one objects table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..batch.config import RunConfig
from ..batch.export import export_coco, merged_table
from ..batch.outputs import write_table
from ..batch.series import Series

ANNOTATE_EXAMPLES = """\
examples:
  napari-sam annotate images/ --out annotations/             # a folder of images, saved into annotations/
  napari-sam segment images/ --out results/ && napari-sam annotate images/ --out results/   # correct a batch run
  napari-sam annotate "plate/**/*.tif" --out plate-labels/ --model facebook/sam-vit-base
"""

EXPORT_EXAMPLES = """\
examples:
  napari-sam export annotations/ --coco annotations.json     # COCO instance annotations, masks as RLE
  napari-sam export results/ --table objects.csv             # every image's objects in one table
"""


def add_annotate_command(commands) -> None:
    parser = commands.add_parser(
        "annotate", help="annotate a series of images in napari, image by image, saving labels into a folder",
        description="Open napari with the Image series dock on every image of files, folders and globs (as "
                    "napari-sam segment takes them). Labels are saved into the output folder in the batch outputs' "
                    "format as you work; a batch run's output folder opens for correction as it is, and what you "
                    "correct is never overwritten by a later batch run.",
        epilog=ANNOTATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, folders (their images) or quoted globs ('**' recurses)")
    parser.add_argument("--out", required=True, help="output folder (created; not inside an input folder)")
    parser.add_argument("--model", help="the checkpoint to annotate with (default: the batch run's, else tiny-cells)")
    parser.add_argument("--settings", help="a settings file (JSON, as the Segment everything dock exports it)")
    parser.add_argument("--stack", action="store_true", help="each input folder is one stack of its files")
    parser.add_argument("--channel", type=int, default=-1, help="the channel of multichannel files (default: none)")
    parser.add_argument("--break-lock", action="store_true",
                        help="open the folder although another session's lock is on it (that session is gone)")
    parser.set_defaults(run=_annotate)


def _annotate(args: argparse.Namespace) -> int:
    config = RunConfig.load(args.settings) if args.settings else None
    model = args.model or (config.batch.model if config is not None else None)
    series = Series(args.inputs, args.out, stack=args.stack, model=model, channel=args.channel,
                    settings=None if config is None else config.to_dict(), break_lock=args.break_lock)
    try:
        import napari

        viewer = napari.Viewer(title=f"napari-sam: {series.out.name}")
        _, dock = viewer.window.add_plugin_dock_widget("napari-sam", "Image series")
        dock.start(series, model)
    except Exception:
        series.close()
        raise
    napari.run()
    return 0


def add_export_command(commands) -> None:
    parser = commands.add_parser(
        "export", help="export a series or batch output folder: COCO instance annotations, one objects table",
        description="Export every image of a series or batch output folder: COCO instance annotations (masks as "
                    "RLE; a plane of a stack is one COCO image) and one objects table of every image.",
        epilog=EXPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="a series or batch output folder")
    parser.add_argument("--coco", help="the COCO JSON file to write")
    parser.add_argument("--table", help="the merged objects table to write (.csv, or .parquet with pyarrow)")
    parser.set_defaults(run=_export)


def _export(args: argparse.Namespace) -> int:
    if not args.coco and not args.table:
        raise ValueError("say what to write: --coco FILE, --table FILE or both.")
    if args.coco:
        counts = export_coco(args.out, args.coco)
        print(f"{counts['annotations']} objects on {counts['images']} image planes: {args.coco}")
    if args.table:
        table = merged_table(args.out)
        fmt = "parquet" if Path(args.table).suffix.lower() == ".parquet" else "csv"
        write_table(Path(args.table), table, fmt)
        print(f"{len(table)} rows of {table['image'].nunique()} images: {args.table}")
    return 0
