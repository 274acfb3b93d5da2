"""Train "tiny-cells": a small SAM (transformers SamModel) on freshly generated synthetic cells.

Every step draws new images with ``napari_sam.demo.synthetic_cells`` at random sizes and contrasts, prepares them
exactly as ``Predictor.set_image`` does, and samples prompts per cell: a positive point, positive + negative
points, and jittered boxes. The loss is SAM's: focal + dice on the masks (the best of the three candidates for
each prompt, and the single-mask output) plus an MSE regression of the IoU head on the true IoUs.

    python scripts/train_tiny_sam.py --out src/napari_sam/models/tiny-cells --steps 1500 --seed 0

Reproducible for a given seed and step count on one machine. Writes a ``save_pretrained`` folder
(safetensors only) with its preprocessor config.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam.core.image.preparation import display_rgb, model_input, resized_shape
from napari_sam.core.model import model_geometry
from napari_sam.core.workflows.training.recipe import mask_losses, optimizer_step, warmup_cosine
from napari_sam.demo import synthetic_cells
from napari_sam.testing.random_weights import random_sam, sam_config

IMAGE_SIZE = 256


def tiny_cells_config():
    """The architecture of tiny-cells: SAM at 256 pixels, patch 16, a 4-layer ViT of width 160."""
    return sam_config(image_size=IMAGE_SIZE, patch_size=16, hidden_size=160, depth=4, heads=4,
                      output_channels=96, global_attn_indexes=(1, 3), window_size=8, decoder_mlp_dim=384,
                      decoder_heads=4)


def sample_image(rng: np.random.Generator, geometry):
    """One training image: (pixels (3, S, S), ground-truth labels in the model frame (S, S) int64)."""
    height, width = (int(v) for v in rng.integers(150, 420, 2))
    image, labels = synthetic_cells((height, width), seed=int(rng.integers(2**31)), dtype=np.uint16,
                                    radius_range=(rng.uniform(9, 14), rng.uniform(20, 32)))
    flips = rng.integers(0, 2, 3)
    if flips[0]:
        image, labels = image[::-1], labels[::-1]
    if flips[1]:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if flips[2]:
        image, labels = image.T, labels.T
    low, high = np.percentile(image, [rng.uniform(0, 30), rng.uniform(97, 100)])
    if rng.random() < 0.3:  # saturating limits, as a user may set them
        high = low + (high - low) * rng.uniform(0.4, 0.9)
    rgb = display_rgb(np.ascontiguousarray(image), contrast_limits=(low, max(high, low + 1)))
    pixels = model_input(rgb, geometry)[0]
    new_h, new_w = resized_shape(labels.shape, geometry.longest_edge)
    frame = torch.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=torch.int64)
    frame[:new_h, :new_w] = F.interpolate(torch.from_numpy(labels.astype(np.int64))[None, None].float(),
                                          size=(new_h, new_w), mode="nearest")[0, 0].long()
    return pixels, frame


def sample_prompts(rng, frame: torch.Tensor, count: int):
    """Prompts for ``count`` cells of one image, in the model frame as (x, y).

    Returns a list of (kind, points (n, 2), labels (n,), box (4,) or None, target mask (S, S) bool).
    """
    ids = [int(i) for i in torch.unique(frame) if i > 0]
    prompts = []
    if not ids:
        return prompts
    for cell in rng.choice(ids, size=count, replace=len(ids) < count):
        target = frame == cell
        ys, xs = torch.nonzero(target, as_tuple=True)
        outside_y, outside_x = torch.nonzero(~target & (frame >= 0), as_tuple=True)
        x0, x1, y0, y1 = xs.min().item(), xs.max().item(), ys.min().item(), ys.max().item()
        kind = rng.choice(["point", "points", "box"], p=[0.4, 0.3, 0.3])
        if kind == "box":
            size = max(x1 - x0, y1 - y0) + 1
            jitter = rng.normal(0, 0.06 * size, 4).clip(-0.15 * size, 0.15 * size)
            box = np.array([x0, y0, x1, y1], dtype=np.float32) + jitter.astype(np.float32)
            prompts.append(("box", None, None, box, target))
            continue
        n_pos = 1 if kind == "point" else int(rng.integers(1, 4))
        n_neg = 0 if kind == "point" else int(rng.integers(1, 3))
        pos = rng.integers(0, len(xs), n_pos)
        # negatives near the cell: within twice its size
        near = ((outside_x - (x0 + x1) / 2).abs() < (x1 - x0 + 8)) & ((outside_y - (y0 + y1) / 2).abs() < (y1 - y0 + 8))
        candidates = torch.nonzero(near).flatten()
        if len(candidates) == 0:
            candidates = torch.arange(len(outside_x))
        neg = candidates[rng.integers(0, len(candidates), n_neg)] if n_neg else torch.empty(0, dtype=torch.long)
        points = np.concatenate([np.stack([xs[pos], ys[pos]], 1), np.stack([outside_x[neg], outside_y[neg]], 1)])
        labels = np.array([1] * n_pos + [0] * n_neg)
        prompts.append((kind, points.astype(np.float32), labels, None, target))
    return prompts


def true_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    predicted = logits > 0
    target = targets[:, None] > 0.5
    intersection = (predicted & target).sum(dim=(-2, -1)).float()
    union = (predicted | target).sum(dim=(-2, -1)).float()
    return intersection / union.clamp(min=1)


def decode(model, embeddings, group, multimask: bool):
    """Run the decoder on one group of prompts of the same kind. Returns (logits (N, C, S, S), iou (N, C))."""
    kind = group[0][1][0]
    inputs = {}
    if kind == "box":
        inputs["input_boxes"] = torch.stack([torch.from_numpy(p[3]) for _, p in group])[:, None]
    else:
        longest = max(len(p[1]) for _, p in group)
        points = torch.zeros(len(group), 1, longest, 2)
        labels = torch.full((len(group), 1, longest), -10, dtype=torch.long)
        for row, (_, p) in enumerate(group):
            points[row, 0, : len(p[1])] = torch.from_numpy(p[1])
            labels[row, 0, : len(p[2])] = torch.from_numpy(p[2])
        inputs["input_points"], inputs["input_labels"] = points, labels
    image_index = torch.tensor([index for index, _ in group])
    out = model(image_embeddings=embeddings[image_index], multimask_output=multimask, **inputs)
    return out.pred_masks[:, 0], out.iou_scores[:, 0]


def held_out_ious(folder, seeds=range(100_000, 100_012), shape=(256, 256), dtype=np.uint16) -> dict:
    """Median IoU with the ground-truth cell, through ``Predictor``, for a click at a random interior pixel of
    each cell and for each cell's bounding box, on images of seeds never used in training."""
    from napari_sam import Predictor

    predictor = Predictor.from_pretrained(folder, device="cpu")
    rng = np.random.default_rng(0)
    clicks, boxes = [], []
    for seed in seeds:
        image, labels = synthetic_cells(shape, seed=seed, dtype=dtype)
        predictor.set_image(image)
        for cell in range(1, labels.max() + 1):
            target = labels == cell
            rows, cols = np.nonzero(target)
            if len(rows) < 30:
                continue
            pick = rng.integers(len(rows))
            mask = predictor.predict(points=[[rows[pick], cols[pick]]]).best_masks()[0]
            clicks.append((mask & target).sum() / (mask | target).sum())
            box = [rows.min(), cols.min(), rows.max(), cols.max()]
            mask = predictor.predict(boxes=[box]).best_masks()[0]
            boxes.append((mask & target).sum() / (mask | target).sum())
    return {"click_median_iou": float(np.median(clicks)), "box_median_iou": float(np.median(boxes)),
            "cells": len(clicks)}


def train(args) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    config = tiny_cells_config()
    model = random_sam(config, seed=args.seed)
    with torch.no_grad():  # Fourier features fine enough to place a point within a few pixels
        model.shared_image_embedding.positional_embedding.normal_(0.0, args.fourier_scale)
    model.train()
    geometry = model_geometry(config)
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, args.steps)
    start = time.time()
    history, iou_history = [], []
    for step in range(args.steps):
        batch = [sample_image(rng, geometry) for _ in range(args.images)]
        pixels = torch.stack([b[0] for b in batch])
        embeddings = model.vision_encoder(pixels).last_hidden_state
        groups: dict[str, list] = {}
        for index, (_, frame) in enumerate(batch):
            for prompt in sample_prompts(rng, frame, args.prompts):
                groups.setdefault(prompt[0], []).append((index, prompt))
        loss = torch.zeros(())
        n_prompts = sum(len(g) for g in groups.values())
        step_ious = []
        for group in groups.values():
            full = torch.stack([p[4] for _, p in group]).float()[:, None]
            targets = F.avg_pool2d(full, IMAGE_SIZE // geometry.mask_size)[:, 0]  # the decoder's resolution
            logits, iou = decode(model, embeddings, group, multimask=True)
            focal, dice = mask_losses(logits, targets)
            per_candidate = 20 * focal + dice
            best = per_candidate.min(dim=1).values
            ious = true_iou(logits.detach(), targets)
            step_ious.append(ious.max(dim=1).values)
            iou_loss = F.mse_loss(iou, ious, reduction="none").sum(dim=1)
            single_logits, single_iou = decode(model, embeddings, group, multimask=False)
            single_focal, single_dice = mask_losses(single_logits, targets)
            single_iou_loss = F.mse_loss(single_iou, true_iou(single_logits.detach(), targets), reduction="none")[:, 0]
            loss = loss + (best + 0.5 * (20 * single_focal + single_dice)[:, 0] + iou_loss + single_iou_loss).sum()
        loss = loss / max(1, n_prompts)
        optimizer_step(model.parameters(), optimizer, schedule, loss)
        history.append(loss.item())
        iou_history.append(torch.cat(step_ious).mean().item())
        if step % args.log_every == 0 or step == args.steps - 1:
            recent = np.mean(history[-args.log_every:])
            best_iou = np.mean(iou_history[-args.log_every:])
            print(f"step {step:5d}  loss {recent:.4f}  best-candidate IoU {best_iou:.3f}  "
                  f"lr {schedule.get_last_lr()[0]:.2e}  {time.time() - start:7.1f} s", flush=True)
    elapsed = time.time() - start
    model.eval()
    out = Path(args.out)
    save_checkpoint(model, geometry, out, IMAGE_SIZE)
    summary = {"steps": args.steps, "seed": args.seed, "images_per_step": args.images,
               "prompts_per_image": args.prompts, "parameters": parameters, "training_seconds": round(elapsed),
               "final_loss": float(np.mean(history[-50:]))}
    summary.update(held_out_ious(out))
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def save_checkpoint(model, geometry, out: Path, image_size: int) -> None:
    """``model`` as a ``save_pretrained`` folder (safetensors) with SAM's preprocessor config for ``image_size``."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    preprocessor = {"image_processor_type": "SamImageProcessor", "image_mean": list(geometry.mean),
                    "image_std": list(geometry.std), "size": {"longest_edge": image_size},
                    "pad_size": {"height": image_size, "width": image_size}, "do_resize": True, "do_rescale": True,
                    "do_normalize": True, "do_pad": True, "rescale_factor": 1 / 255, "resample": 2,
                    "mask_size": {"longest_edge": image_size // 4},
                    "mask_pad_size": {"height": image_size // 4, "width": image_size // 4}}
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="src/napari_sam/models/tiny-cells")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--images", type=int, default=8, help="images per step")
    parser.add_argument("--prompts", type=int, default=20, help="prompts per image")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fourier-scale", type=float, default=1.0, help="std of the positional Fourier features")
    parser.add_argument("--log-every", type=int, default=50)
    print(train(parser.parse_args()))


if __name__ == "__main__":
    main()
