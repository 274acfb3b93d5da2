"""Fine-tuning on this machine: time per training step and peak memory for decoder-only, LoRA and full training, on
the bundled tiny-cells and on SAM ViT-B's architecture (seeded random weights, 1024-pixel input); and the time to
convergence of decoder-only and of full fine-tuning of tiny-cells on a look it has never seen, with the held-out
figures they reach.

Each (model, mode) runs in a process of its own, so that its peak memory (the largest resident set, less the one
before training) is its own. Steps are :class:`napari_sam.core.workflows.training.Trainer` steps, as
``napari-sam train`` takes them: 16 objects from 4 frames (images or tiles), clicks, noisy boxes, correction clicks
and background clicks; the first step is left out (warm-up). Embedding the images once (decoder-only) is reported
apart.

Convergence: ``napari-sam train``'s function, decoder-only and full, on 8 synthetic 512 x 512 images of dark nuclei
on a bright background (:func:`inverted_nuclei`; the bundled model was trained on fluorescence only), 2 of them held
out for validation, until validation stops improving or the time is spent; then the base and the new models on 2
more images of that look they never saw.

Writes benchmarks/results/finetune.json (``--results``).

Usage: ``python benchmarks/finetune.py [--models tiny-cells vit-b] [--steps 6] [--minutes 5] [--results PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results  # noqa: E402  (benchmarks/results.py)

MODES = ("none", "lora", "full")
MODE_NAMES = {"none": "decoder only", "lora": "LoRA (rank 8)", "full": "full"}
#: The convergence runs' learning rates: a decoder alone takes a larger one than the whole model.
LEARNING_RATES = {"none": 2e-3, "full": 3e-4}


def inverted_nuclei(seed: int):
    """A 512 x 512 synthetic nuclei scene with its contrast inverted (dark nuclei, bright background), and its
    labels: a look the bundled tiny-cells never saw."""
    from napari_sam.testing.synthetic_microscopy import synthetic_scene

    image, labels, _ = synthetic_scene((512, 512), "nuclei", seed=seed)
    return (image.max() - image).astype(image.dtype), labels


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def one_mode(model_name: str, mode: str, steps: int) -> dict:
    """Time ``steps`` training steps (after a warm-up step) of ``mode`` on ``model_name``, in this process."""
    import torch

    from napari_sam import Predictor
    from napari_sam.core.settings import TrainingSettings
    from napari_sam.core.workflows.training import AnnotatedImage, Trainer
    from napari_sam.core.workflows.training.examples import training_frames
    from napari_sam.testing.random_weights import random_sam, sam_config

    torch.manual_seed(0)
    if model_name == "vit-b":
        from napari_sam.core.model import model_geometry

        model = random_sam(sam_config(), seed=0)
        predictor = Predictor(model, model_geometry(model.config), "cpu", checkpoint="sam-vit-b-architecture")
    else:
        predictor = Predictor.from_pretrained(model_name, device="cpu", dtype=torch.float32)
    images = [AnnotatedImage(*inverted_nuclei(1000 + i), name=str(i)) for i in range(2)]
    settings = TrainingSettings(encoder=mode)
    start = time.perf_counter()
    frames = training_frames(predictor, images, pixels=mode != "none")
    embedding = time.perf_counter() - start
    before = peak_bytes()
    trainer = Trainer(predictor.model, predictor, frames, settings)
    trainer.step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - start)
    return {"model": model_name, "mode": mode, "frames": len(frames), "step_seconds": float(np.median(times)),
            "embedding_seconds": embedding if mode == "none" else None,
            "peak_bytes": peak_bytes() - before, "trained_parameters": sum(p.numel() for p in trainer.trained)}


def convergence(minutes: float, encoder: str) -> dict:
    """Fine-tuning of tiny-cells (``encoder``: none or full) on 8 inverted-nuclei images until validation stops
    improving or ``minutes`` are spent."""
    import torch

    from napari_sam import Predictor
    from napari_sam.core.settings import TrainingSettings
    from napari_sam.core.workflows.training import AnnotatedImage, finetune
    from napari_sam.core.workflows.training.validation import measure
    from napari_sam.testing.held_out import HELD_OUT

    base = Predictor.from_pretrained("tiny-cells", device="cpu", dtype=torch.float32)
    training = [AnnotatedImage(*inverted_nuclei(2000 + i), name=f"train{i}") for i in range(8)]
    held_out = [AnnotatedImage(*inverted_nuclei(HELD_OUT + 300 + i), name=f"held{i}") for i in range(2)]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = finetune(base, training, Path(folder) / "model",
                          TrainingSettings(minutes=minutes, encoder=encoder, learning_rate=LEARNING_RATES[encoder]),
                          allow_worse=True)
        total = time.perf_counter() - start
        tuned = Predictor.from_pretrained(Path(folder) / "model", device="cpu", dtype=torch.float32)
        return {"steps": result.steps, "best_step": result.best_step, "training_seconds": result.seconds,
                "total_seconds": total, "stopped": result.stopped,
                "seconds_to_best": result.seconds * result.best_step / max(1, result.steps),
                "held_out_base": measure(base, held_out, base.recommended.everything).to_dict(),
                "held_out_tuned": measure(tuned, held_out, tuned.recommended.everything).to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny-cells", "vit-b"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--vit-b-modes", nargs="+", default=["none"], choices=MODES,
                        help="the modes timed on ViT-B (default: decoder-only; LoRA and full need a GPU's memory: on "
                             "a 24 GB CPU machine LoRA peaks near 20 GB)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model and mode")
    parser.add_argument("--minutes", type=float, default=5.0, help="each convergence run's time limit")
    parser.add_argument("--skip-convergence", action="store_true")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "MODE", "STEPS"), help=argparse.SUPPRESS)
    results.add_option(parser, "finetune")
    args = parser.parse_args()
    if args.one:  # a child process: one (model, mode), printed as JSON
        print("RESULT " + json.dumps(one_mode(args.one[0], args.one[1], int(args.one[2]))))
        return
    measured = []
    for model in args.models:
        for mode in (args.vit_b_modes if model == "vit-b" else args.modes):
            done = subprocess.run([sys.executable, __file__, "--one", model, mode, str(args.steps)],
                                  capture_output=True, text=True)
            line = next((row for row in done.stdout.splitlines() if row.startswith("RESULT ")), None)
            if line is None:
                raise RuntimeError(f"{model} {mode} failed:\n{done.stderr[-3000:]}")
            measured.append(json.loads(line[len("RESULT "):]))
            print(measured[-1], flush=True)
    rows = [[{"tiny-cells": "tiny-cells", "vit-b": "SAM ViT-B architecture"}.get(m["model"], m["model"]),
             MODE_NAMES[m["mode"]], f"{m['trained_parameters'] / 1e6:.2f} M", results.seconds(m["step_seconds"]),
             results.size(m["peak_bytes"]), "-" if m["embedding_seconds"] is None else
             results.seconds(m["embedding_seconds"] / m["frames"])] for m in measured]
    tables = [results.table(
        "finetune-steps", ["model", "trained", "parameters trained", "time per step", "peak memory",
                           "embedding per frame (once)"], rows,
        notes=f"Median of {args.steps} steps of 16 objects from 4 frames, after a warm-up step, float32 on the CPU. "
              "Peak memory: the process's largest resident set during the steps, less the one before. Decoder-only "
              "training embeds each frame once (tiny-cells sees 512-pixel images in 9 tiles of 256 pixels; ViT-B "
              "sees each whole); LoRA and full training run the encoder in every step.")]
    figures: dict = {"steps": measured}
    if not args.skip_convergence:
        runs = {encoder: convergence(args.minutes, encoder) for encoder in ("none", "full")}
        figures["convergence"] = runs

        def row(name: str, held: dict) -> list[str]:
            return [name, f"{held['click_median_iou']:.2f}", f"{held['box_median_iou']:.2f}",
                    f"{held['everything_recall']:.2f}", f"{held['everything_precision']:.2f}"]

        rows = [row("tiny-cells", runs["none"]["held_out_base"])]
        for encoder, run in runs.items():
            name = (f"fine-tuned, {MODE_NAMES[encoder]}: {run['steps']} steps in "
                    f"{results.seconds(run['training_seconds'])}, best at step {run['best_step']} ({run['stopped']}); "
                    f"{results.seconds(run['total_seconds'])} in all")
            rows.append(row(name, run["held_out_tuned"]))
        tables.append(results.table(
            "finetune-convergence", ["model", "click (median IoU)", "box (median IoU)", "segment everything recall",
                                     "precision"], rows,
            notes=f"tiny-cells fine-tuned for at most {args.minutes:g} minutes on 8 images of dark nuclei on a bright "
                  "background (6 to learn from, 2 to validate on), measured on 2 more it never saw. 'In all': with "
                  "embedding, validation before and after, calibration and saving."))
    results.write(args.results, "finetune", "Fine-tuning: time per step, memory and convergence", tables, figures)


if __name__ == "__main__":
    main()
