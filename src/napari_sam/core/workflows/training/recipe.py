"""SAM's interactive training, as its authors trained it: prompts drawn from each object (a click anywhere inside
it, its box with noisy sides), a correction round (one more click in the previous prediction's error region, with
that prediction's logits as the mask prompt), multimask output with the loss of the best candidate only, and the
IoU head regressed on each candidate's true IoU.

The loss is SAM's: focal (x 20) + dice on the low-resolution masks, plus the mean squared error of the predicted
IoUs. Clicks on the background teach every candidate's predicted IoU to be 0 there, so that segment everything's
grid points on the background give nothing that passes its filter.

Everything here is in the model's input frame: a target is an (S, S) bool mask of the padded model input, prompts
are (row, col) in its pixels, and they become SAM's (x, y) only in :func:`decoder_inputs`. The training scripts of
the bundled model, ``napari-sam train`` and the *Train* dock all use these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

#: The weight of the focal loss against the dice loss, as in SAM's paper.
FOCAL_WEIGHT = 20.0
#: Noise on each side of a box prompt: this share of the box's side (SAM's paper), at most this many pixels.
BOX_NOISE, BOX_NOISE_MAX = 0.1, 20.0


@dataclass(frozen=True)
class TrainingPrompt:
    """One object's prompt in the model input of frame ``frame``.

    Attributes:
        frame: which of the step's frames (their image features) it is decoded on.
        target: (S, S) bool, the object in the padded model input (empty for a click on the background).
        points: (k, 2) float32 (row, col) in model-input pixels, or None; labels: (k,) 1 object, 0 background.
        box: (4,) float32 (row_min, col_min, row_max, col_max) in model-input pixels, or None.
        mask_input: (m, m) low-resolution logits of a previous prediction, or None.
    """

    frame: int
    target: torch.Tensor
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask_input: torch.Tensor | None = None

    @property
    def structure(self) -> tuple[int, bool, bool]:
        """What must agree for prompts to be decoded in one call: how many points, a box, a mask prompt."""
        return (0 if self.points is None else len(self.points), self.box is not None, self.mask_input is not None)


def mask_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-candidate focal and dice losses: ``logits`` (N, C, m, m) against ``targets`` (N, m, m) in [0, 1] (the
    share of each low-resolution pixel inside the object). Returns (N, C) each."""
    target = targets[:, None].expand_as(logits)
    probability = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = probability * target + (1 - probability) * (1 - target)
    alpha_t = 0.25 * target + 0.75 * (1 - target)
    focal = (alpha_t * (1 - p_t) ** 2 * bce).mean(dim=(-2, -1))
    intersection = (probability * target).sum(dim=(-2, -1))
    dice = 1 - (2 * intersection + 1) / (probability.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1)
    return focal, dice


def true_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of each candidate (``logits`` (N, C, m, m) upsampled to the targets' size, thresholded at 0) with the
    (N, S, S) bool ``targets``: (N, C)."""
    size = targets.shape[-2:]
    predicted = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False) > 0
    target = targets[:, None]
    intersection = (predicted & target).sum(dim=(-2, -1)).float()
    union = (predicted | target).sum(dim=(-2, -1)).float()
    return intersection / union.clamp(min=1)


def box_of(mask: torch.Tensor) -> np.ndarray:
    """(row_min, col_min, row_max, col_max) float32 of a non-empty bool mask."""
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return np.array([rows.min(), cols.min(), rows.max(), cols.max()], dtype=np.float32)


def noisy_box(rng: np.random.Generator, mask: torch.Tensor) -> np.ndarray:
    """The mask's box, each side moved by normal noise of :data:`BOX_NOISE` of the box's side (at most
    :data:`BOX_NOISE_MAX` pixels), as SAM was trained."""
    box = box_of(mask)
    size = np.array([box[2] - box[0], box[3] - box[1]] * 2) + 1
    moved = box + np.clip(rng.normal(0, BOX_NOISE * size), -BOX_NOISE_MAX, BOX_NOISE_MAX).astype(np.float32)
    high = np.array(mask.shape, dtype=np.float32) - 1
    moved[[0, 2]], moved[[1, 3]] = moved[[0, 2]].clip(0, high[0]), moved[[1, 3]].clip(0, high[1])
    return np.concatenate([np.minimum(moved[:2], moved[2:]), np.maximum(moved[:2], moved[2:])]).astype(np.float32)


def random_pixel(rng: np.random.Generator, region: torch.Tensor) -> np.ndarray:
    """(row, col) float32 of a pixel drawn uniformly from a non-empty bool ``region``."""
    rows, cols = torch.nonzero(region, as_tuple=True)
    pick = int(rng.integers(len(rows)))
    return np.array([rows[pick], cols[pick]], dtype=np.float32)


def correction_point(rng: np.random.Generator, previous: torch.Tensor, target: torch.Tensor):
    """A click in the error region of the bool mask ``previous`` against ``target``: ((row, col), label), positive
    where the object was missed, negative where the mask spilled over (whichever is larger)."""
    missed, spilled = target & ~previous, previous & ~target
    region, label = (missed, 1) if missed.sum() >= spilled.sum() else (spilled, 0)
    if not region.any():
        region, label = target, 1
    return random_pixel(rng, region), label


def mask_logits(masks: torch.Tensor, mask_size: int) -> torch.Tensor:
    """(N, S, S) bool masks as (N, m, m) logits of their low-resolution shares, as a drawn mask is given to SAM."""
    share = F.adaptive_avg_pool2d(masks.float()[:, None], mask_size)[:, 0].clamp(1e-3, 1 - 1e-3)
    return torch.logit(share)


def decoder_inputs(prompts: list[TrainingPrompt], device) -> dict:
    """transformers' keyword inputs for prompts of one :attr:`~TrainingPrompt.structure`: (row, col) become SAM's
    (x, y) here, at the model's boundary."""
    first, inputs = prompts[0], {}
    if first.points is not None:
        xy = np.stack([p.points[:, ::-1] for p in prompts]).astype(np.float32)  # type: ignore[index]
        inputs["input_points"] = torch.from_numpy(xy).to(device)[:, None]
        labels = np.stack([p.labels for p in prompts]).astype(np.int64)  # type: ignore[misc]
        inputs["input_labels"] = torch.from_numpy(labels).to(device)[:, None]
    if first.box is not None:
        xyxy = np.stack([p.box[[1, 0, 3, 2]] for p in prompts]).astype(np.float32)  # type: ignore[index]
        inputs["input_boxes"] = torch.from_numpy(xyxy).to(device)[:, None]
    if first.mask_input is not None:
        inputs["input_masks"] = torch.stack([p.mask_input for p in prompts]).to(device)[:, None]  # type: ignore[misc]
    return inputs


def decode(model, family, features: list[tuple[torch.Tensor, tuple]], prompts: list[TrainingPrompt],
           multimask: bool, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``prompts`` on their frames' ``features`` ((embedding (1, C, e, e), extras) per frame) in one call per
    structure (each prompt with its own frame's features): ``(logits (N, C, m, m), predicted IoUs (N, C))`` in the
    prompts' order."""
    groups: dict[tuple, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt.structure, []).append(index)
    logits: list = [None] * len(prompts)
    scores: list = [None] * len(prompts)
    device = features[0][0].device
    for indices in groups.values():
        frames = [prompts[i].frame for i in indices]
        embedding = torch.cat([features[f][0] for f in frames])
        extras = tuple(torch.cat([features[f][1][k] for f in frames]) for k in range(len(features[frames[0]][1])))
        inputs = decoder_inputs([prompts[i] for i in indices], device)
        if "input_masks" in inputs:
            inputs["input_masks"] = inputs["input_masks"].to(embedding.dtype)
        part_logits, part_scores = family.decode(model, embedding, extras, len(indices), inputs, multimask,
                                                 grad=grad)
        for row, index in enumerate(indices):
            logits[index], scores[index] = part_logits[row], part_scores[row]
    return torch.stack(logits), torch.stack(scores)


def prompt_loss(model, family, features, prompts: list[TrainingPrompt], multimask: bool, mask_size: int):
    """SAM's loss for ``prompts``: ``(summed loss, the best candidate's logits (N, m, m) detached, their true IoUs
    (N,))``. Each prompt's loss is that of its best candidate (focal x :data:`FOCAL_WEIGHT` + dice, at the
    decoder's resolution against each low-resolution pixel's share of the object), plus the squared error of every
    candidate's predicted IoU against its true IoU."""
    full = torch.stack([p.target for p in prompts]).to(features[0][0].device)
    logits, predicted_iou = decode(model, family, features, prompts, multimask)
    targets = F.adaptive_avg_pool2d(full.float()[:, None], mask_size)[:, 0]
    focal, dice = mask_losses(logits, targets)
    best = (FOCAL_WEIGHT * focal + dice).min(dim=1)
    ious = true_iou(logits.detach(), full)
    iou_loss = F.mse_loss(predicted_iou, ious, reduction="none").sum(dim=1)
    rows = torch.arange(len(prompts))
    return (best.values + iou_loss).sum(), logits.detach()[rows, best.indices], ious[rows, best.indices]


def background_loss(model, family, features, prompts: list[TrainingPrompt]) -> torch.Tensor:
    """Clicks on no object: every candidate's predicted IoU is regressed to 0 (summed)."""
    _, predicted_iou = decode(model, family, features, prompts, True)
    return (predicted_iou**2).sum()


def object_ids(labels: torch.Tensor, min_pixels: int = 3) -> list[int]:
    """The ids of ``labels`` (the model input's labels; 0 background, -1 ignored) with at least ``min_pixels``."""
    ids, counts = torch.unique(labels, return_counts=True)
    return [int(i) for i, n in zip(ids, counts) if i > 0 and n >= min_pixels]


def first_prompts(rng: np.random.Generator, frames: list[torch.Tensor], per_frame: int):
    """A click anywhere inside and a noisy box for up to ``per_frame`` objects of each frame's labels:
    ``(clicks, boxes)``, lists of :class:`TrainingPrompt`."""
    clicks, boxes = [], []
    for index, labels in enumerate(frames):
        ids = object_ids(labels)
        for cell in rng.choice(ids, size=min(per_frame, len(ids)), replace=False) if ids else []:
            target = labels == int(cell)
            point = random_pixel(rng, target)
            clicks.append(TrainingPrompt(index, target, point[None], np.array([1])))
            boxes.append(TrainingPrompt(index, target, box=noisy_box(rng, target)))
    return clicks, boxes


def corrections(rng: np.random.Generator, prompts: list[TrainingPrompt], chosen: torch.Tensor):
    """A correction round for ``prompts`` from their previous low-resolution logits ``chosen`` (N, m, m): one more
    click in the error region, and those logits as the mask prompt."""
    if not prompts:
        return []
    size = tuple(prompts[0].target.shape)
    previous = F.interpolate(chosen[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0] > 0
    out = []
    for prompt, before, logits in zip(prompts, previous.cpu(), chosen):
        point, label = correction_point(rng, before, prompt.target)
        points = point[None] if prompt.points is None else np.concatenate([prompt.points, point[None]])
        labels = np.array([label]) if prompt.labels is None else np.concatenate([prompt.labels, [label]])
        out.append(replace(prompt, points=points.astype(np.float32), labels=labels, mask_input=logits))
    return out


def background_clicks(rng: np.random.Generator, frames: list[torch.Tensor], per_frame: int):
    """Up to ``per_frame`` clicks on each frame's background (label 0; never padding or ignored pixels)."""
    out = []
    for index, labels in enumerate(frames):
        background = labels == 0
        if not background.any():
            continue
        for _ in range(per_frame):
            out.append(TrainingPrompt(index, torch.zeros_like(background), random_pixel(rng, background)[None],
                                      np.array([1])))
    return out


def interactive_loss(model, family, features, frames: list[torch.Tensor], rng: np.random.Generator,
                     per_frame: int, mask_size: int, correct: float = 0.5, background: int = 2):
    """One step of SAM's interactive training on frames' ``features`` and labels ``frames`` (model input; 0
    background, -1 ignored): clicks and noisy boxes (multimask; boxes also single-mask), a correction round for a
    share ``correct`` of them (single-mask), and ``background`` clicks per frame. Returns (mean loss per prompt,
    mean true IoU of the chosen candidates)."""
    clicks, boxes = first_prompts(rng, frames, per_frame)
    loss, count, ious, later = torch.zeros((), device=features[0][0].device), 0, [], []
    for group in (clicks, boxes):
        if not group:
            continue
        part, chosen, iou = prompt_loss(model, family, features, group, True, mask_size)
        loss, count = loss + part, count + len(group)
        ious.append(iou)
        if group is boxes:
            single, _, _ = prompt_loss(model, family, features, group, False, mask_size)
            loss = loss + 0.5 * single
        keep = rng.random(len(group)) < correct
        later += corrections(rng, [p for p, k in zip(group, keep) if k], chosen[torch.from_numpy(keep)])
    groups: dict[tuple, list[TrainingPrompt]] = {}
    for prompt in later:
        groups.setdefault(prompt.structure, []).append(prompt)
    for group in groups.values():
        part, _, iou = prompt_loss(model, family, features, group, False, mask_size)
        loss, count = loss + part, count + len(group)
        ious.append(iou)
    if background:
        clicks_off = background_clicks(rng, frames, background)
        if clicks_off:
            loss = loss + background_loss(model, family, features, clicks_off)
            count += len(clicks_off)
    return loss / max(1, count), float(torch.cat(ious).mean()) if ious else 0.0


def warmup_cosine(optimizer, steps: int):
    """A learning-rate schedule over ``steps``: linear warm-up for the first 5%, then cosine decay to 0."""
    warmup = max(1, steps // 20)

    def rate(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, rate)


def optimizer_step(parameters, optimizer, schedule, loss: torch.Tensor) -> None:
    """Back-propagate ``loss``, clip the gradients' norm to 1, step the optimizer and the schedule."""
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(parameters), 1.0)
    optimizer.step()
    schedule.step()
