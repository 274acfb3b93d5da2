"""The ``napari-sam`` command line: ``demo``, ``models``, ``embed`` and ``segment`` (batch runs, see
:mod:`napari_sam.cli.segment`).

Options of settings (``--tiling``, ``--tile-size``, ``--halo``) are generated from the settings classes of
:mod:`napari_sam.core.settings`, the same ones the docks are generated from.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..core.embeddings import EmbeddingStore, store_bytes
from ..core.errors import ModelLoadError
from ..core.image import is_rgb, napari_contrast_limits, plane_of, planes, read_image
from ..core.model import DEFAULT_CHECKPOINT, KNOWN_CHECKPOINTS, PRECISIONS
from ..core.predictor import Predictor
from ..core.settings import TilingSettings
from ..demo import DEMO_MODEL, run_demo
from .options import add_settings, settings_from
from .segment import add_segment_command


def _demo(args: argparse.Namespace) -> int:
    run_demo(args.model)
    return 0


def _models(args: argparse.Namespace) -> int:
    for name, description in KNOWN_CHECKPOINTS.items():
        print(f"{name:32s} {description}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from tqdm import tqdm


    tiling = settings_from(args, TilingSettings)
    store = EmbeddingStore(args.store, max_bytes=store_bytes(args.max_gb))
    images = []
    for path in args.images:
        data = read_image(path)
        rgb = is_rgb(tuple(data.shape))
        limits = tuple(args.contrast) if args.contrast else napari_contrast_limits(
            data, rgb, in_memory=Path(path).suffix.lower() != ".zarr")
        images.append((path, data, rgb, limits))
    predictor = Predictor.from_pretrained(args.model, device=args.device, dtype=args.precision, tiling=tiling,
                                          store=store)
    start, computed, total = time.perf_counter(), 0, 0
    for path, data, rgb, limits in images:
        plans = [predictor.plan(plane_of(data, index), limits, rgb) for index in planes(data.shape, rgb)]
        frames = sum(len(predictor.frames(plan=plan)) for plan in plans)
        with tqdm(total=frames, desc=Path(path).name, unit="frame") as bar:
            for plan in plans:
                start_n = bar.n  # progress comes once per encoder batch: move the bar by the frames done
                computed += predictor.precompute(plan=plan, progress=lambda done, count, n=start_n: bar.update(
                    n + done - bar.n))
        total += frames
    print(f"{total} frames of {len(images)} image(s): {computed} computed, {total - computed} already stored; "
          f"{time.perf_counter() - start:.1f} s. Store: {store.root} ({store.nbytes / 2**20:.0f} MiB).")
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
    embed = commands.add_parser(
        "embed", help="precompute image embeddings into the store the docks read from",
        description="Embed every plane of each image (in native-resolution tiles where it is large) into an "
                    "embedding store on disk; napari-sam's docks then prompt these images without running the "
                    "encoder. Run it again: what is stored already is not computed again.")
    embed.add_argument("images", nargs="+", help="TIFF (also multi-page and OME-TIFF), zarr, PNG or JPEG files")
    embed.add_argument("--model", default=DEFAULT_CHECKPOINT, help="bundled name, hub id or folder of a checkpoint")
    embed.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    embed.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="auto: bfloat16 where the device computes it fast")
    embed.add_argument("--store", default=None, help="the store's folder (default: the per-user cache the docks use)")
    embed.add_argument("--max-gb", type=float, default=20.0, help="the store's size cap in GiB (default 20)")
    embed.add_argument("--contrast", type=float, nargs=2, metavar=("LOW", "HIGH"),
                       help="contrast limits (default: the data range, as napari shows a new image of a TIFF, PNG "
                            "or JPEG file; for zarr, which napari opens lazily, pass the limits the layer shows)")
    add_settings(embed, TilingSettings)
    embed.set_defaults(run=_embed)
    add_segment_command(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, PermissionError, ModelLoadError) as error:  # bad input: one clear line, no traceback
        print(f"napari-sam {args.command}: {error}", file=sys.stderr)
        return 2

