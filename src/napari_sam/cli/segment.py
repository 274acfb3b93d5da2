"""``napari-sam segment``: a batch run from the command line. Its setting options are generated from the same
settings classes as the docks; a settings file (exported by the Segment everything dock, or written by hand) gives
them all at once, and options on the command line override it."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..batch.config import SECTIONS, BatchSettings, RunConfig
from ..batch.runner import run_batch
from ..core.errors import ModelLoadError
from ..core.settings import EverythingSettings, PropagationSettings, TilingSettings
from .options import add_settings, given_settings

EXAMPLES = """\
examples:
  napari-sam segment images/ --out results/ --model tiny-cells
      segment everything in every image of a folder, on a local cluster sized to this machine
  napari-sam segment "plates/**/*.tif" --out results/ --settings settings.json
      the settings exported by the Segment everything dock ("Export batch run...")
  napari-sam segment stacks/ --out tracks/ --mode propagate --prompts prompts.csv
      extend objects clicked on one plane of each stack through the stack
  napari-sam segment slices/ --stack --out volume/ --points-per-side 16
      a folder of 2D files as one z-stack
  napari-sam segment images/ --out results/ --scheduler tcp://scheduler:8786
      on an existing dask cluster (for example one started with dask-jobqueue on SLURM)

outputs, per image NAME: NAME_labels.ome.tif (or NAME_labels.ome.zarr for large ones), NAME_objects.csv (id, plane,
area, score, stability, box, centroid), and for the run napari-sam-run.json (settings, model, versions, timings,
failures). Exit status: 0 all done, 1 some images failed, 2 bad arguments.
"""

#: Argument-namespace prefixes of the generated setting options, by settings-file section.
PREFIXES = {"batch": "batch.", "segment_everything": "everything.", "tiling": "tiling.",
            "propagation": "propagation."}


def add_segment_command(commands) -> None:
    parser = commands.add_parser(
        "segment", help="segment folders of images on dask.distributed (segment everything, prompts, propagation)",
        description="Segment every image of files, folders and globs (TIFF incl. multi-page and OME-TIFF, PNG, JPEG, "
                    "zarr and OME-zarr; stacks) on dask.distributed, writing labels and a per-object table per "
                    "image. Finished images are skipped when run again, so a stopped run resumes.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, folders (their images) or quoted globs ('**' recurses)")
    parser.add_argument("--out", required=True, help="output folder (created; not inside an input folder)")
    parser.add_argument("--settings", help="a settings file (JSON, as the Segment everything dock exports it); "
                                           "options given here override it")
    parser.add_argument("--prompts", help="prompts file for --mode prompts or propagate: CSV, JSON or GeoJSON "
                                          "(see the README)")
    parser.add_argument("--stack", action="store_true", help="each input folder is one stack of its files")
    parser.add_argument("--scheduler", help="address of a running dask scheduler (default: a local cluster)")
    parser.add_argument("--workers", type=int, help="worker processes of the local cluster (default: one per GPU, "
                                                    "else one per 4 CPU cores)")
    parser.add_argument("--overwrite", action="store_true", help="redo finished images and replace outputs of other "
                                                                 "settings")
    parser.add_argument("--store", help="embedding store folder to fill and read (--mode embed: default the "
                                        "per-user store the docks read)")
    parser.add_argument("--store-gb", type=float, default=20.0, help="the store's size cap in GiB (default 20)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    notes = {"segment_everything": "default: what the checkpoint recommends",
             "propagation": "default: what the checkpoint recommends"}
    titles = {"batch": "run", "segment_everything": "segment everything", "tiling": "tiling of large images",
              "propagation": "propagation (--mode propagate)"}
    for key, kind in SECTIONS.items():
        group = parser.add_argument_group(titles[key])
        add_settings(group, kind, PREFIXES[key], given_only=True, default_note=notes.get(key, ""))
    parser.set_defaults(run=_segment)


def config_from(args: argparse.Namespace) -> RunConfig:
    """The run's config: the settings file (or the defaults) with the options given on the command line."""
    config = RunConfig.load(args.settings) if args.settings else RunConfig()
    batch = config.batch.replace(**given_settings(args, BatchSettings, PREFIXES["batch"]))
    config = dataclasses.replace(config, batch=batch,
                                 tiling=config.tiling.replace(**given_settings(args, TilingSettings,
                                                                               PREFIXES["tiling"])))
    everything = given_settings(args, EverythingSettings, PREFIXES["segment_everything"])
    propagation = given_settings(args, PropagationSettings, PREFIXES["propagation"])
    if everything or propagation:
        resolved = config.resolved()
        config = dataclasses.replace(
            config, everything=resolved.everything.replace(**everything) if everything else config.everything,
            propagation=resolved.propagation.replace(**propagation) if propagation else config.propagation)
    return config


def _segment(args: argparse.Namespace) -> int:
    try:
        config = config_from(args)
        summary = run_batch(args.inputs, args.out, config, prompts=args.prompts, stack=args.stack,
                            scheduler=args.scheduler, workers=args.workers, overwrite=args.overwrite,
                            store=args.store, store_gb=args.store_gb, progress=args.progress)
    except (ValueError, ModelLoadError) as error:
        print(f"napari-sam segment: {error}", file=sys.stderr)
        return 2
    counts = summary.values["counts"]
    print(f"{counts['done']} done, {counts['skipped']} skipped (finished before), {counts['failed']} failed"
          + (f", {counts['no prompts']} without prompts" if counts["no prompts"] else "")
          + f" in {summary.values['seconds']:.1f} s. Summary: {summary.path}")
    for failure in summary.failures:
        print(f"  failed: {failure['name']}: {failure['error']}", file=sys.stderr)
    return summary.exit_status
