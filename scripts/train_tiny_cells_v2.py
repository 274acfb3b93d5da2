"""Train a "tiny-cells" v2 candidate: a small SAM (transformers SamModel) on synthetic microscopy of many looks.

Data: :func:`napari_sam.testing.synthetic_microscopy.synthetic_scene` (nuclei of 6–120 px, sparse to crowded, touching
and overlapping, textures, blur, noise, uneven light, 8/16-bit, mitotic objects, debris, cytoplasm and phase looks), and
a tenth of ``napari_sam.demo.synthetic_cells`` (the demo's cells, 48–112 px across in the model's frame), prepared
exactly as ``Predictor.set_image`` prepares an image (napari's default contrast limits, or others). A pool of scenes
is refreshed a few scenes per step; each step draws images from it with random flips.

Prompts, as SAM was trained, for objects drawn at random in each image:
- one positive click anywhere inside the object (multimask output, the min-loss candidate is trained);
- the object's box with noise on its sides (multimask, and the single-mask output);
- a correction round after either: a click in the previous mask's error region (positive where the object was
  missed, negative where the mask spilled), the earlier points and box, and the previous low-res logits as
  ``mask_input`` (single-mask output);
- a tracking prompt, as ``propagate`` gives each next slice: the box and interior points of a shifted, grown or
  shrunk copy of the object and that copy as ``mask_input`` logits (single-mask output).
The loss is SAM's: focal (x 20) + dice on the masks, plus an MSE regression of every candidate's predicted IoU on
its true IoU, so that the IoU head is calibrated (segment everything's thresholds then mean what they say).

    python scripts/train_tiny_cells_v2.py --out stage1 --init src/napari_sam/models/tiny-cells --steps 1200 \
        --stop-after 601 --seed 0
    python scripts/train_tiny_cells_v2.py --out stage2 --init stage1 --steps 500 --seed 1 --lr 5e-4 --sharp 2 \
        --mask-input-scale 3

``--init`` starts from an earlier tiny-cells (v1: 256-px input), its position embeddings and relative positions
resized to the new input. Reproducible for a given seed, step count and initial weights on one machine. Writes a
``save_pretrained`` folder (safetensors only) with its preprocessor config and ``training.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from train_tiny_sam import save_checkpoint  # scripts/train_tiny_sam.py: v1's saving

from napari_sam.core.image.preparation import default_contrast_limits, display_rgb, model_input, resized_shape
from napari_sam.core.model import model_geometry
from napari_sam.core.workflows import interior_points
from napari_sam.core.workflows.training.recipe import mask_losses, optimizer_step, warmup_cosine
from napari_sam.demo import CELL_RADIUS, synthetic_cells
from napari_sam.testing.random_weights import random_sam, sam_config
from napari_sam.testing.synthetic_microscopy import synthetic_scene, synthetic_stack

IMAGE_SIZE = 512


def tiny_cells_v2_config():
    """The architecture of tiny-cells v2: SAM at 512 pixels, patch 16 (32 x 32 tokens, 128 x 128 mask logits), a
    4-layer ViT of width 160, windows of 8 with global layers 2 and 4, 96 channels, SAM's two-way decoder."""
    return sam_config(image_size=IMAGE_SIZE, patch_size=16, hidden_size=160, depth=4, heads=4,
                      output_channels=96, global_attn_indexes=(1, 3), window_size=8, decoder_mlp_dim=384,
                      decoder_heads=4)


def warm_start(model, folder) -> None:
    """Load the weights of an earlier tiny-cells into ``model``, resizing the absolute position embedding
    (bicubic) and the global layers' relative-position tables (linear) to ``model``'s token grid."""
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / "model.safetensors"))
    own = model.state_dict()
    for name, value in state.items():
        if name not in own or own[name].shape == value.shape:
            continue
        if value.ndim == 4:  # (1, h, w, C) position embedding
            grid = F.interpolate(value.permute(0, 3, 1, 2), size=own[name].shape[1:3], mode="bicubic",
                                 align_corners=False)
            state[name] = grid.permute(0, 2, 3, 1)
        elif value.ndim == 2:  # (2 size - 1, head dim) relative positions
            state[name] = F.interpolate(value.T[None], size=own[name].shape[0], mode="linear",
                                        align_corners=False)[0].T
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"prompt_encoder.shared_embedding.positional_embedding"}  # the same tensor as shared_image_embedding's
    if set(missing) - tied or unexpected:
        raise ValueError(f"{folder} does not fit tiny-cells: missing {missing}, unexpected {unexpected}")


def prepared(image: np.ndarray, labels: np.ndarray, rng, geometry):
    """(pixels (3, S, S) float32, labels in the model frame (S, S) int64; -1 = padding)."""
    low, high = default_contrast_limits(image, False)
    choice = rng.random()
    if choice < 0.25:  # the data's full range
        low, high = float(image.min()), float(image.max())
    elif choice < 0.4:  # saturating limits, as a user may set them
        high = low + (high - low) * rng.uniform(0.3, 0.9)
    rgb = display_rgb(image, contrast_limits=(low, max(high, low + 1e-3)))
    return model_input(rgb, geometry)[0], in_frame(labels, geometry)


def in_frame(labels: np.ndarray, geometry) -> torch.Tensor:
    """(H, W) instance labels resized (nearest) into the model's (S, S) frame as an image is; -1 = padding."""
    new_h, new_w = resized_shape(labels.shape, geometry.longest_edge)
    frame = torch.full((IMAGE_SIZE, IMAGE_SIZE), -1, dtype=torch.int64)
    frame[:new_h, :new_w] = F.interpolate(torch.from_numpy(labels.astype(np.int64))[None, None].float(),
                                          size=(new_h, new_w), mode="nearest")[0, 0].long()
    return frame


class ScenePool:
    """``size`` prepared scenes; :meth:`refresh` replaces the oldest ``count`` with new ones. A share
    ``cells_share`` of them are the demo's cells (``napari_sam.demo.synthetic_cells``), their sizes in the model's
    frame ``cells_scale`` (low, high; log-uniform) times the demo's own (24-56 px across); the rest are drawn from
    the synthetic microscopy mix. Scenes are 384-768 px on their longest side; a share ``small_share`` of them are
    96-383 px, upscaled into the model's frame (soft-edged, as a small image or crop is). A share ``stack_share``
    are a slice of a z-stack (the demo's 3D cells or :func:`synthetic_stack`) with the labels of a slice one or two
    away: the tracking prompts there are made from that neighbouring slice, as ``propagate`` makes them.

    Each scene is (pixels (3, S, S), labels in the frame (S, S), the neighbouring slice's labels or None)."""

    def __init__(self, rng, geometry, size: int, cells_share: float = 0.1, cells_scale=(2.0, 2.0),
                 small_share: float = 0.0, stack_share: float = 0.0):
        self.rng, self.geometry, self.scenes, self.next = rng, geometry, [], 0
        self.cells_share, self.cells_scale, self.small_share = cells_share, cells_scale, small_share
        self.stack_share = stack_share
        while len(self.scenes) < size:
            self.scenes.append(self.new())

    def new(self):
        if self.stack_share and self.rng.random() < self.stack_share:  # no draw at 0: earlier stages repeat
            return self.stack_slices()
        small = self.small_share and self.rng.random() < self.small_share  # no draw at 0: earlier stages repeat
        longest = int(self.rng.integers(96, 384) if small else self.rng.integers(384, 769))
        other = int(longest * self.rng.uniform(0.6, 1.0))
        shape = (longest, other) if self.rng.random() < 0.5 else (other, longest)
        seed = int(self.rng.integers(2**31))
        if self.rng.random() < self.cells_share:
            low, high = self.cells_scale  # one size: no draw, so that earlier stages repeat
            zoom = longest / IMAGE_SIZE * (low if low == high else float(np.exp(self.rng.uniform(np.log(low),
                                                                                                  np.log(high)))))
            image, labels = synthetic_cells(shape, seed=seed,
                                            n_cells=round(20 * shape[0] * shape[1] / (256 * zoom) ** 2),
                                            radius_range=(CELL_RADIUS[0] * zoom, CELL_RADIUS[1] * zoom),
                                            dtype=self.rng.choice([np.uint16, np.uint8, np.float32]))
        else:
            image, labels, _ = synthetic_scene(shape, "random", seed=seed)
        return (*prepared(image, labels, self.rng, self.geometry), None)

    def stack_slices(self):
        """A slice of a new z-stack and the labels of the slice 1 or 2 before or after it: the demo's 3D cells
        (planes of 128-319 px, upscaled 1.6-4x into the frame as the propagation tests' stacks are) or a
        synthetic-microscopy stack of any look (planes of 256-639 px)."""
        seed = int(self.rng.integers(2**31))
        if self.rng.random() < 0.5:
            side = int(self.rng.integers(128, 320))
            volume, labels = synthetic_cells((32, side, int(side * self.rng.uniform(0.7, 1.0))), seed=seed, ndim=3,
                                             dtype=self.rng.choice([np.uint16, np.uint8, np.float32]))
        else:
            side = int(self.rng.integers(256, 640))
            volume, labels, _ = synthetic_stack((int(self.rng.integers(12, 33)), side,
                                                 int(side * self.rng.uniform(0.7, 1.0))), "random", seed=seed)
        if self.rng.random() < 0.5:
            volume, labels = volume[:, :, ::-1], labels[:, :, ::-1]  # planes wider than tall as well
            volume = np.ascontiguousarray(volume.transpose(0, 2, 1))
            labels = np.ascontiguousarray(labels.transpose(0, 2, 1))
        occupied = np.nonzero(labels.any(axis=(1, 2)))[0]
        z = int(self.rng.choice(occupied))
        other = int(np.clip(z + self.rng.choice([-2, -1, 1, 2], p=[0.15, 0.35, 0.35, 0.15]), 0, len(labels) - 1))
        pixels, frame = prepared(volume[z], labels[z], self.rng, self.geometry)
        return pixels, frame, in_frame(labels[other], self.geometry)

    def refresh(self, count: int) -> None:
        for _ in range(count):
            self.scenes[self.next % len(self.scenes)] = self.new()
            self.next += 1

    def draw(self, count: int):
        """``count`` scenes with random flips (only of the image's region: padding stays bottom-right)."""
        out = []
        for index in self.rng.choice(len(self.scenes), size=count, replace=False):
            pixels, frame, neighbour = self.scenes[index]
            rows, cols = int((frame[:, 0] >= 0).sum()), int((frame[0] >= 0).sum())
            pixels, frame = pixels.clone(), frame.clone()
            neighbour = None if neighbour is None else neighbour.clone()
            for axis in (1, 2):
                if self.rng.random() < 0.5:
                    extent = rows if axis == 1 else cols
                    part = pixels.narrow(axis, 0, extent)
                    pixels.narrow(axis, 0, extent).copy_(part.flip(axis))
                    for labels in (frame, neighbour) if neighbour is not None else (frame,):
                        region = labels.narrow(axis - 1, 0, extent)
                        labels.narrow(axis - 1, 0, extent).copy_(region.flip(axis - 1))
            out.append((pixels, frame, neighbour))
        return out


def box_of(mask: torch.Tensor) -> np.ndarray:
    """(x0, y0, x1, y1) of a non-empty (S, S) bool mask."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def noisy_box(rng, mask: torch.Tensor) -> np.ndarray:
    """The mask's box, each side moved by noise of 10% of the box's side (at most 20 px), as SAM's training."""
    box = box_of(mask)
    size = np.array([box[2] - box[0], box[3] - box[1]] * 2) + 1
    return box + np.clip(rng.normal(0, 0.1 * size), -20, 20).astype(np.float32)


def perturbed(rng, mask: torch.Tensor) -> torch.Tensor:
    """A neighbouring slice's view of the object: shifted by up to 15% of its size, grown or shrunk by a few px."""
    box = box_of(mask)
    size = max(box[2] - box[0], box[3] - box[1]) + 1
    shift = np.round(rng.uniform(-0.15, 0.15, 2) * size).astype(int)
    moved = torch.roll(mask, shifts=(int(shift[1]), int(shift[0])), dims=(0, 1))
    radius = int(rng.integers(-max(1, size // 8), max(1, size // 8) + 1))
    if radius:
        grid = moved.float()[None, None]
        kernel = 2 * abs(radius) + 1
        grid = F.max_pool2d(grid, kernel, 1, abs(radius)) if radius > 0 else -F.max_pool2d(-grid, kernel, 1,
                                                                                            abs(radius))
        moved = grid[0, 0] > 0.5
    return moved if moved.any() else mask


def mask_logits(masks: torch.Tensor, mask_size: int) -> torch.Tensor:
    """(N, S, S) bool masks as (N, m, m) logits of their low-res fractions, as ``Predictor.mask_logits`` makes."""
    fraction = F.adaptive_avg_pool2d(masks.float()[:, None], mask_size)[:, 0].clamp(1e-3, 1 - 1e-3)
    return torch.logit(fraction)


def correction_point(rng, previous: torch.Tensor, target: torch.Tensor):
    """A click in the error region of ``previous`` (frame-res bool) against ``target``: (x, y), label."""
    missed, spilled = target & ~previous, previous & ~target
    region, label = (missed, 1) if missed.sum() >= spilled.sum() else (spilled, 0)
    if not region.any():
        region, label = target, 1
    ys, xs = torch.nonzero(region, as_tuple=True)
    pick = int(rng.integers(len(ys)))
    return np.array([xs[pick], ys[pick]], dtype=np.float32), label


def true_iou(logits: torch.Tensor, full_targets: torch.Tensor) -> torch.Tensor:
    """IoU of each candidate (logits (N, C, m, m) upsampled to the frame) with (N, S, S) bool targets."""
    size = full_targets.shape[-1]
    predicted = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False) > 0
    target = full_targets[:, None]
    intersection = (predicted & target).sum(dim=(-2, -1)).float()
    union = (predicted | target).sum(dim=(-2, -1)).float()
    return intersection / union.clamp(min=1)


def decode(model, embeddings, prompts, multimask: bool):
    """Decode a list of prompts of one structure: dicts with image, points (n, 2) xy, labels (n,), box or None,
    mask_input (m, m) or None. Returns (logits (N, C, m, m), predicted IoUs (N, C))."""
    first = prompts[0]
    inputs = {}
    if first["points"] is not None:
        longest = max(len(p["points"]) for p in prompts)
        points = torch.zeros(len(prompts), 1, longest, 2)
        labels = torch.full((len(prompts), 1, longest), -10, dtype=torch.long)
        for row, p in enumerate(prompts):
            points[row, 0, : len(p["points"])] = torch.from_numpy(p["points"])
            labels[row, 0, : len(p["labels"])] = torch.from_numpy(p["labels"])
        inputs["input_points"], inputs["input_labels"] = points, labels
    if first["box"] is not None:
        inputs["input_boxes"] = torch.stack([torch.from_numpy(p["box"]) for p in prompts])[:, None]
    if first["mask_input"] is not None:
        inputs["input_masks"] = torch.stack([p["mask_input"] for p in prompts])[:, None]
    image_index = torch.tensor([p["image"] for p in prompts])
    out = model(image_embeddings=embeddings[image_index], multimask_output=multimask, **inputs)
    return out.pred_masks[:, 0], out.iou_scores[:, 0]


def structure(prompt) -> tuple:
    return (prompt["points"] is not None, prompt["box"] is not None, prompt["mask_input"] is not None)


def first_prompts(rng, frames, neighbours, per_image: int):
    """Click, box and tracking prompts for objects of each image (frame-res targets). An image with a
    neighbouring slice's labels gets tracking prompts from that slice instead (see :func:`slice_tracks`)."""
    clicks, boxes, tracks = [], [], []
    for image, (frame, neighbour) in enumerate(zip(frames, neighbours)):
        if neighbour is not None:
            tracks += slice_tracks(rng, image, frame, neighbour, per_image)
            continue
        ids = [int(i) for i in torch.unique(frame) if i > 0]
        if not ids:
            continue
        for cell in rng.choice(ids, size=min(per_image, len(ids)), replace=False):
            target = frame == cell
            if target.sum() < 3:
                continue
            kind = rng.choice(["click", "box", "track"], p=[0.4, 0.35, 0.25])
            prompt = {"image": image, "target": target, "points": None, "labels": None, "box": None,
                      "mask_input": None}
            if kind == "click":
                ys, xs = torch.nonzero(target, as_tuple=True)
                pick = int(rng.integers(len(ys)))
                prompt.update(points=np.array([[xs[pick], ys[pick]]], dtype=np.float32), labels=np.array([1]))
                clicks.append(prompt)
            elif kind == "box":
                prompt["box"] = noisy_box(rng, target)
                boxes.append(prompt)
            else:
                previous = perturbed(rng, target)
                rows_cols = interior_points(previous.numpy(), int(rng.integers(1, 4)))
                prompt.update(points=rows_cols[:, ::-1].astype(np.float32).copy(),
                              labels=np.ones(len(rows_cols), dtype=np.int64), box=box_of(previous),
                              mask_input=previous)
                tracks.append(prompt)
    return clicks, boxes, tracks


def slice_tracks(rng, image: int, frame: torch.Tensor, neighbour: torch.Tensor, count: int):
    """Tracking prompts as ``propagate`` gives the next slice: for objects of the neighbouring slice, their mask
    there (as it is, or shifted/grown/shrunk a little, as a prediction may be) gives the box, 1-3 interior points
    and, for half of them, the mask input; the target is the object on this slice, empty where it has ended, so
    that the mask and its predicted IoU go to nothing there instead of jumping to a neighbour."""
    ids = [int(i) for i, n in zip(*torch.unique(neighbour, return_counts=True)) if i > 0 and n >= 6]
    out = []
    for cell in rng.choice(ids, size=min(count, len(ids)), replace=False) if ids else []:
        previous = neighbour == cell
        if rng.random() < 0.5:
            previous = perturbed(rng, previous)
        rows_cols = interior_points(previous.numpy(), int(rng.integers(1, 4)))
        out.append({"image": image, "target": frame == cell, "points": rows_cols[:, ::-1].astype(np.float32).copy(),
                    "labels": np.ones(len(rows_cols), dtype=np.int64), "box": box_of(previous),
                    "mask_input": previous if rng.random() < 0.5 else None})
    return out


def background_clicks(rng, frames, count: int):
    """Up to ``count`` clicks per image on background pixels (label 0; not the padding), as prompt dicts."""
    out = []
    for image, frame in enumerate(frames):
        ys, xs = torch.nonzero(frame == 0, as_tuple=True)
        for pick in rng.choice(len(ys), size=min(count, len(ys)), replace=False) if len(ys) else []:
            out.append({"image": image, "target": None, "points": np.array([[xs[pick], ys[pick]]], dtype=np.float32),
                        "labels": np.array([1]), "box": None, "mask_input": None})
    return out


def background_loss(model, embeddings, prompts) -> torch.Tensor:
    """Clicks on no object: every candidate's predicted IoU is regressed to 0 (no mask is right), so that segment
    everything's grid points in the background give nothing that passes its IoU filter."""
    _, predicted_iou = decode(model, embeddings, prompts, True)
    return (predicted_iou**2).sum()


def prompt_loss(model, embeddings, prompts, multimask: bool, mask_size: int, sharp: int = 0):
    """(summed loss, low-res logits of each prompt's best candidate (detached), their true IoUs).

    ``sharp`` 0: the masks are compared at the decoder's resolution with each pixel's inside fraction as target;
    ``sharp`` k > 0: the logits are upsampled k times and compared with the binary mask there, which asks for a
    steep edge (stable masks) instead of a ramp."""
    full = torch.stack([p["target"] for p in prompts])
    logits, predicted_iou = decode(model, embeddings, prompts, multimask)
    if sharp:
        size = mask_size * sharp
        targets = (F.adaptive_avg_pool2d(full.float()[:, None], size)[:, 0] > 0.5).float()
        compared = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    else:
        targets, compared = F.adaptive_avg_pool2d(full.float()[:, None], mask_size)[:, 0], logits
    focal, dice = mask_losses(compared, targets)
    per_candidate = 20 * focal + dice
    best = per_candidate.min(dim=1)
    ious = true_iou(logits.detach(), full)
    iou_loss = F.mse_loss(predicted_iou, ious, reduction="none").sum(dim=1)
    chosen = logits.detach()[torch.arange(len(prompts)), best.indices]
    return (best.values + iou_loss).sum(), chosen, ious[torch.arange(len(prompts)), best.indices]


def corrections(rng, prompts, chosen: torch.Tensor):
    """A correction round for ``prompts`` from their previous logits (m x m): one more click, the previous
    logits as mask input."""
    if not prompts:
        return []
    size = prompts[0]["target"].shape[-1]
    previous = F.interpolate(chosen[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0] > 0
    out = []
    for prompt, before, logits in zip(prompts, previous, chosen):
        point, label = correction_point(rng, before, prompt["target"])
        points = point[None] if prompt["points"] is None else np.concatenate([prompt["points"], point[None]])
        labels = np.array([label]) if prompt["labels"] is None else np.concatenate([prompt["labels"], [label]])
        out.append(dict(prompt, points=points, labels=labels, mask_input=logits))
    return out


def training_step(model, rng, pool, args, mask_size):
    batch = pool.draw(args.images)
    pixels = torch.stack([b[0] for b in batch])
    frames, neighbours = [b[1] for b in batch], [b[2] for b in batch]
    with torch.set_grad_enabled(not args.freeze_encoder):
        embeddings = model.vision_encoder(pixels).last_hidden_state
    clicks, boxes, tracks = first_prompts(rng, frames, neighbours, args.prompts)
    for prompt in tracks:
        if prompt["mask_input"] is None:
            continue
        scale = rng.uniform(0.3, args.mask_input_scale)  # model-like logit magnitudes and the ±6.9 of a drawn mask
        prompt["mask_input"] = mask_logits(prompt["mask_input"][None], mask_size)[0] * scale
    loss, count, ious = torch.zeros(()), 0, []
    later = []
    for group, multimask in ((clicks, True), (boxes, True)):
        if not group:
            continue
        part, chosen, iou = prompt_loss(model, embeddings, group, multimask, mask_size, args.sharp)
        loss, count = loss + part, count + len(group)
        ious.append(iou)
        if group is boxes:
            single, _, _ = prompt_loss(model, embeddings, group, False, mask_size, args.sharp)
            loss = loss + 0.5 * single
        keep = rng.random(len(group)) < args.correct
        later += corrections(rng, [p for p, k in zip(group, keep) if k], chosen[torch.from_numpy(keep)])
    groups: dict[tuple, list] = {}
    for prompt in later + tracks:
        groups.setdefault((structure(prompt), len(prompt["points"]) if prompt["points"] is not None else 0),
                          []).append(prompt)
    for group in groups.values():
        part, _, iou = prompt_loss(model, embeddings, group, False, mask_size, args.sharp)
        loss, count = loss + part, count + len(group)
        ious.append(iou)
    if args.background:
        background = background_clicks(rng, frames, args.background)
        if background:
            loss, count = loss + background_loss(model, embeddings, background), count + len(background)
    return loss / max(1, count), torch.cat(ious).mean().item() if ious else 0.0


def train(args) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    config = tiny_cells_v2_config()
    model = random_sam(config, seed=args.seed)
    if args.init:
        warm_start(model, args.init)
    model.train()
    geometry = model_geometry(config)
    mask_size = geometry.mask_size
    trained = [parameter for name, parameter in model.named_parameters()
               if not (args.freeze_encoder and name.startswith("vision_encoder."))]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, args.steps)
    start = time.time()
    pool = ScenePool(rng, geometry, args.pool, args.cells_share, tuple(args.cells_scale), args.small_share,
                     args.stack_share)
    history, iou_history = [], []
    for step in range(args.steps):
        pool.refresh(args.new_scenes)
        loss, mean_iou = training_step(model, rng, pool, args, mask_size)
        optimizer_step(model.parameters(), optimizer, schedule, loss)
        history.append(loss.item())
        iou_history.append(mean_iou)
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {np.mean(history[-args.log_every:]):.4f}  "
                  f"IoU {np.mean(iou_history[-args.log_every:]):.3f}  lr {schedule.get_last_lr()[0]:.2e}  "
                  f"{time.time() - start:7.1f} s", flush=True)
        if args.checkpoint_every and step and step % args.checkpoint_every == 0:
            save_checkpoint(model, geometry, Path(args.out), IMAGE_SIZE)
        if args.stop_after and step + 1 >= args.stop_after:
            break
    elapsed = time.time() - start
    model.eval()
    save_checkpoint(model, geometry, Path(args.out), IMAGE_SIZE)
    summary = {"steps": args.steps, "stopped_after": len(history), "seed": args.seed,
               "init": Path(args.init).name if args.init else None,
               "images_per_step": args.images, "objects_per_image": args.prompts, "pool": args.pool,
               "new_scenes_per_step": args.new_scenes, "lr": args.lr, "sharp": args.sharp,
               "mask_input_scale": args.mask_input_scale, "cells_share": args.cells_share,
               "cells_scale": list(args.cells_scale), "small_share": args.small_share,
               "stack_share": args.stack_share,
               "background_clicks": args.background,
               "freeze_encoder": args.freeze_encoder,
               "parameters": sum(p.numel() for p in model.parameters()), "training_seconds": round(elapsed),
               "final_loss": float(np.mean(history[-50:])), "final_iou": float(np.mean(iou_history[-50:]))}
    (Path(args.out) / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write the checkpoint to")
    parser.add_argument("--init", default=None, help="an earlier tiny-cells folder to start from")
    parser.add_argument("--steps", type=int, default=1200, help="steps of the learning-rate schedule")
    parser.add_argument("--stop-after", type=int, default=0, help="end after this many steps (0: --steps)")
    parser.add_argument("--images", type=int, default=4, help="images per step")
    parser.add_argument("--prompts", type=int, default=12, help="objects prompted per image")
    parser.add_argument("--correct", type=float, default=0.5, help="share of prompts given a correction round")
    parser.add_argument("--pool", type=int, default=48, help="scenes held")
    parser.add_argument("--new-scenes", type=int, default=1, help="scenes replaced per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sharp", type=int, default=0, help="compare masks k times finer, binary (0: fractions)")
    parser.add_argument("--mask-input-scale", type=float, default=1.0,
                        help="largest factor on the tracking prompts' mask-input logits")
    parser.add_argument("--cells-share", type=float, default=0.1, help="share of scenes of the demo's cells")
    parser.add_argument("--cells-scale", type=float, nargs=2, default=(2.0, 2.0), metavar=("LOW", "HIGH"),
                        help="the demo cells' size in the model's frame, times the demo's own (log-uniform)")
    parser.add_argument("--small-share", type=float, default=0.0,
                        help="share of scenes 96-383 px on their longest side (upscaled into the model's frame)")
    parser.add_argument("--stack-share", type=float, default=0.0,
                        help="share of scenes that are a z-stack's slice, tracked from a neighbouring slice")
    parser.add_argument("--background", type=int, default=0,
                        help="clicks per image on the background, their predicted IoUs taught to be 0")
    parser.add_argument("--freeze-encoder", action="store_true", help="train the prompt encoder and decoder only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    print(train(parser.parse_args()))


if __name__ == "__main__":
    main()
