"""Train the bundled tiny-cells' instance head (segment everything's ``instances`` method) on synthetic scenes only.

    python scripts/train_tiny_cells_head.py --out head --images 64 --minutes 12 --patience 20 --seed 0
    python scripts/train_tiny_cells_head.py --install head   # copy it into the bundled checkpoint

The scenes are :func:`napari_sam.testing.synthetic_microscopy.synthetic_scene` of the training mix (``"random"``:
every look, nuclei most often), 512 x 512, drawn with seeds below the held-out range; a tenth more of them are the
validation images that choose the best state and calibrate the thresholds. Training goes through
:func:`napari_sam.finetune` with ``TrainingSettings(instances=True)``, as ``napari-sam train --instances`` does; the
encoder and the decoder of tiny-cells are not changed. ``--install`` copies the head file and its ``napari_sam.json``
sections (the head, and segment everything's method and instance thresholds) into the bundled checkpoint, keeping its
other settings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from napari_sam import Predictor
from napari_sam.core.decoding import HEAD_FILE, HEAD_SECTION
from napari_sam.core.model import BUNDLED_DIR, RECOMMENDATIONS_FILE
from napari_sam.core.settings import TrainingSettings
from napari_sam.core.workflows.training import AnnotatedImage, finetune
from napari_sam.testing.synthetic_microscopy import synthetic_scene

#: What --install takes from the trained folder's segment everything settings.
INSTANCE_SETTINGS = ("method", "foreground_thresh", "center_distance_thresh", "boundary_distance_thresh",
                     "min_seed_area", "min_instance_area")


def scenes(count: int, rng: np.random.Generator, size: int = 512) -> list[AnnotatedImage]:
    out = []
    for _ in range(count):
        seed = int(rng.integers(2**31))
        image, labels, look = synthetic_scene((size, size), "random", seed=seed)
        out.append(AnnotatedImage(image, labels, f"{look} {seed}"))
    return out


def train(args) -> None:
    rng = np.random.default_rng(args.seed)
    images, validation = scenes(args.images, rng), scenes(max(2, args.images // 10), rng)
    base = Predictor.from_pretrained("tiny-cells", device="cpu", dtype=torch.float32)
    start = time.monotonic()
    settings = TrainingSettings(instances=True, minutes=args.minutes, learning_rate=args.lr, patience=args.patience,
                                seed=args.seed)
    result = finetune(base, images, args.out, settings, validation=validation, overwrite=True, allow_worse=True,
                      progress=lambda p: print(p.phase, p.step, p.loss, p.validation, flush=True)
                      if p.phase != "training" or p.validation is not None else None)
    print(json.dumps({"steps": result.steps, "best_step": result.best_step, "stopped": result.stopped,
                      "training_seconds": round(result.seconds), "seconds": round(time.monotonic() - start),
                      "before": result.before.to_dict(), "after": result.after.to_dict()}, indent=1))


def install(folder: Path) -> None:
    trained = json.loads((folder / RECOMMENDATIONS_FILE).read_text(encoding="utf-8"))
    bundled = BUNDLED_DIR / "tiny-cells"
    values = json.loads((bundled / RECOMMENDATIONS_FILE).read_text(encoding="utf-8"))
    values["segment_everything"].update({k: trained["segment_everything"][k] for k in INSTANCE_SETTINGS})
    values[HEAD_SECTION] = trained[HEAD_SECTION]
    shutil.copyfile(folder / HEAD_FILE, bundled / HEAD_FILE)
    (bundled / RECOMMENDATIONS_FILE).write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    print(f"installed the head of {folder} into {bundled}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="the checkpoint folder to write")
    parser.add_argument("--install", type=Path, help="copy this trained folder's head into the bundled tiny-cells")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.install:
        install(args.install)
    elif args.out:
        train(args)
    else:
        parser.error("give --out (train) or --install (copy a trained head into tiny-cells)")


if __name__ == "__main__":
    main()
