"""``napari-sam train``: fine-tune a checkpoint on the user's annotations (a series or batch output folder, or image
and labels files in pairs) and write a new checkpoint folder."""

from __future__ import annotations

import argparse
import sys
import time

from ..batch.training_data import folder_examples, paired_examples
from ..core.embeddings import EmbeddingStore
from ..core.model import DEFAULT_CHECKPOINT, DEVICES
from ..core.settings import TrainingSettings
from ..core.workflows.training import TrainingProgress, finetune
from .options import add_settings, given_settings

TRAIN_EXAMPLES = """\
examples:
  napari-sam train annotations/ --out my-model/                       # an image series' folder, 10 minutes
  napari-sam train --images a.tif b.tif --labels a_labels.tif b_labels.tif --out my-model/ --epochs 20
  napari-sam train results/ --model facebook/sam-vit-base --encoder lora --minutes 60 --out sam-lora/
  napari-sam segment images/ --out run/ --model my-model/             # the new model loads like any checkpoint
"""


def add_train_command(commands) -> None:
    parser = commands.add_parser(
        "train", help="fine-tune a model on your annotations and save it as a new checkpoint folder",
        description="Fine-tune a checkpoint on annotated images with SAM's interactive training (clicks, noisy "
                    "boxes, correction clicks), validating on held-out images (or objects) before and after. By "
                    "default only the mask decoder and prompt encoder learn, on embeddings computed once: minutes "
                    "on a laptop CPU. The folder written loads wherever a checkpoint loads; the base is never "
                    "changed.",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", help="a series or batch output folder (images with NAME_labels.*)")
    parser.add_argument("--images", nargs="+", metavar="IMAGE", help="image files (instead of a folder)")
    parser.add_argument("--labels", nargs="+", metavar="LABELS", help="their labels files, in the same order")
    parser.add_argument("--model", default=DEFAULT_CHECKPOINT,
                        help=f"the base checkpoint: bundled name, hub id or folder (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--out", required=True, help="the folder to write the new checkpoint to")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="where to train (default auto: the GPU)")
    parser.add_argument("--channel", type=int, default=-1, help="the channel of multichannel files (default: none)")
    parser.add_argument("--store", help="an embedding store folder: images embedded before are not encoded again")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    parser.add_argument("--allow-worse", action="store_true",
                        help="save the model even when it is worse than the base on validation")
    add_settings(parser, TrainingSettings, "train_")
    parser.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> int:
    if (args.data is None) == (args.images is None):
        raise ValueError("give a series or batch output folder, or --images with --labels (not both).")
    if args.images is not None and args.labels is None:
        raise ValueError("--images needs --labels: one labels file per image, in the same order.")
    given = given_settings(args, TrainingSettings, "train_")
    if "minutes" in given and "epochs" in given:
        raise ValueError("give --minutes or --epochs, not both.")
    settings = TrainingSettings().replace(**given)
    examples = folder_examples(args.data, args.channel) if args.data else paired_examples(args.images, args.labels)
    store = EmbeddingStore(args.store) if args.store else None
    started, last = time.monotonic(), [0.0]

    def progress(update: TrainingProgress) -> None:
        now = time.monotonic()
        if update.phase == "training" and update.validation is None and now - last[0] < 5:
            return
        last[0] = now
        if update.phase == "training":
            planned = f"/{update.steps}" if update.steps else ""
            shown = f", validation {update.validation:.3f}" if update.validation is not None else ""
            print(f"step {update.step}{planned}: loss {update.loss:.4f}{shown} (best {update.best:.3f}), "
                  f"{update.elapsed:.0f} s", flush=True)
        elif update.phase == "embedding" and update.total:
            print(f"embedding: {update.done}/{update.total} images", flush=True)
        else:
            print(f"{update.phase}...", flush=True)

    result = finetune(args.model, examples, args.out, settings, device=args.device, store=store,
                      overwrite=args.overwrite, allow_worse=args.allow_worse, progress=progress)
    before, after = result.before, result.after
    print(f"{result.steps} steps in {result.seconds:.0f} s (ended by {result.stopped}; best at step "
          f"{result.best_step}); {time.monotonic() - started:.0f} s in all.")
    print(f"validation ({result.split['validation_objects']} objects): click {before.click:.3f} -> {after.click:.3f}, "
          f"box {before.box:.3f} -> {after.box:.3f}, segment everything recall {before.recall:.2f} -> "
          f"{after.recall:.2f} at precision {before.precision:.2f} -> {after.precision:.2f}")
    print(f"saved {result.out}", file=sys.stdout)
    return 0
