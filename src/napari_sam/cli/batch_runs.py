"""``napari-sam segment`` and ``napari-sam embed``: batch runs from the command line, both on dask.distributed
(:func:`~napari_sam.batch.runner.run_batch`). Their setting options are generated from the same settings classes as
the docks; a settings file (exported by the Segment everything dock, or written by hand) gives them all at once, and
options on the command line override it."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..batch.config import MODES, RUN_SECTIONS, BatchSettings, RunConfig
from ..batch.runner import RunSummary, run_batch
from ..core.embeddings import DEFAULT_STORE_GB
from ..core.settings import EverythingSettings, PropagationSettings, TilingSettings
from .options import add_settings, given_settings

SEGMENT_EXAMPLES = """\
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

EMBED_EXAMPLES = """\
examples:
  napari-sam embed images/ --model facebook/sam-vit-base
      every plane of every image into the per-user store the docks read: they open these images embedded
  napari-sam embed "plates/**/*.tif" --store /data/embeddings --store-gb 200 --scheduler tcp://scheduler:8786
      a shared store on a cluster; the docks read it with "keep embeddings on disk" set to that folder

Run it again: what is stored already is not computed again. Exit status: 0 every frame is in the store, 1 some
images failed (or their embeddings could not all be kept), 2 bad arguments.
"""

#: Argument-namespace prefixes of the generated setting options, by settings-file section.
PREFIXES = {"batch": "batch.", "segment_everything": "everything.", "tiling": "tiling.",
            "propagation": "propagation."}
#: The run's own settings that an embed run uses.
EMBED_SETTINGS = ("model", "device", "precision", "contrast", "channel", "tiles_per_task")


def _add_run_arguments(parser, store_help: str) -> None:
    """The arguments both batch commands take: inputs, where they run, the store."""
    parser.add_argument("inputs", nargs="+", help="image files, folders (their images) or quoted globs ('**' recurses)")
    parser.add_argument("--stack", action="store_true", help="each input folder is one stack of its files")
    parser.add_argument("--scheduler", help="address of a running dask scheduler (default: a local cluster)")
    parser.add_argument("--workers", type=int, help="worker processes of the local cluster (default: one per GPU, "
                                                    "else one per 4 CPU cores)")
    parser.add_argument("--overwrite", action="store_true", help="redo finished images and replace outputs of other "
                                                                 "settings")
    parser.add_argument("--store", help=store_help)
    parser.add_argument("--store-gb", type=float, default=DEFAULT_STORE_GB,
                        help=f"the store's size cap in GB (default {DEFAULT_STORE_GB:g})")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_segment_command(commands) -> None:
    parser = commands.add_parser(
        "segment", help="segment folders of images on dask.distributed (segment everything, prompts, propagation)",
        description="Segment every image of files, folders and globs (TIFF incl. multi-page and OME-TIFF, PNG, JPEG, "
                    "zarr and OME-zarr; stacks) on dask.distributed, writing labels and a per-object table per "
                    "image. Finished images are skipped when run again, so a stopped run resumes.",
        epilog=SEGMENT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_arguments(parser, "an embedding store folder to fill and read (default: none)")
    parser.add_argument("--out", required=True, help="output folder (created; not inside an input folder)")
    parser.add_argument("--settings", help="a settings file (JSON, as the Segment everything dock exports it); "
                                           "options given here override it")
    parser.add_argument("--prompts", help="prompts file for --mode prompts or propagate: CSV, JSON or GeoJSON "
                                          "(see the batch guide)")
    notes = {"segment_everything": "default: what the checkpoint recommends",
             "propagation": "default: what the checkpoint recommends"}
    titles = {"batch": "run", "segment_everything": "segment everything", "tiling": "tiling of large images",
              "propagation": "propagation (--mode propagate)"}
    for key, kind in RUN_SECTIONS.items():
        group = parser.add_argument_group(titles[key])
        choices = {"mode": [mode for mode in MODES if mode != "embed"]} if kind is BatchSettings else None
        add_settings(group, kind, PREFIXES[key], default_note=notes.get(key, ""),
                     choices=choices)  # embedding runs are napari-sam embed's
    parser.set_defaults(run=_segment)


def add_embed_command(commands) -> None:
    parser = commands.add_parser(
        "embed", help="precompute image embeddings into the store the docks read from (on dask.distributed)",
        description="Embed every plane of each image (in tiles where it is large) into an embedding store on disk, "
                    "on dask.distributed; napari-sam's docks then prompt these images without running the encoder.",
        epilog=EMBED_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_arguments(parser, "the store's folder (default: the per-user store the docks read)")
    parser.add_argument("--out", help="a folder for the run's summary and records (default: none)")
    add_settings(parser.add_argument_group("run"), BatchSettings, PREFIXES["batch"], only=EMBED_SETTINGS)
    add_settings(parser.add_argument_group("tiling of large images"), TilingSettings, PREFIXES["tiling"])
    parser.set_defaults(run=_embed)


def config_from(args: argparse.Namespace) -> RunConfig:
    """A segment run's config: the settings file (or the defaults) with the options given on the command line."""
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


def _run(args: argparse.Namespace, config: RunConfig, prompts: str | None = None) -> RunSummary:
    return run_batch(args.inputs, args.out, config, prompts=prompts, stack=args.stack, scheduler=args.scheduler,
                     workers=args.workers, overwrite=args.overwrite, store=args.store, store_gb=args.store_gb,
                     progress=args.progress)


def _report_failures(summary: RunSummary) -> int:
    for failure in summary.failures:
        print(f"  failed: {failure['name']}: {failure['error']}", file=sys.stderr)
    return summary.exit_status


def _segment(args: argparse.Namespace) -> int:
    summary = _run(args, config_from(args), args.prompts)
    counts = summary.values["counts"]
    print(f"{counts['done']} done, {counts['skipped']} skipped (finished before), {counts['failed']} failed"
          + (f", {counts['no prompts']} without prompts" if counts["no prompts"] else "")
          + (f", {counts['kept']} kept (corrected by hand)" if counts["kept"] else "")
          + f" in {summary.values['seconds']:.1f} s. Summary: {summary.path}")
    return _report_failures(summary)


def _embed(args: argparse.Namespace) -> int:
    batch = BatchSettings(mode="embed").replace(**given_settings(args, BatchSettings, PREFIXES["batch"]))
    tiling = TilingSettings().replace(**given_settings(args, TilingSettings, PREFIXES["tiling"]))
    summary = _run(args, RunConfig(batch=batch, tiling=tiling))
    images = [image for image in summary.values["images"] if image["status"] in ("done", "skipped")]
    frames = sum(image.get("frames", 0) for image in images)
    computed = sum(image.get("encoder_runs", 0) for image in images if image["status"] == "done")
    print(f"{frames} frames of {len(images)} image(s): {computed} computed, {frames - computed} already stored; "
          f"{summary.values['seconds']:.1f} s. Store: {summary.values['store']}"
          + (f". Summary: {summary.path}" if summary.path else ""))
    return _report_failures(summary)
