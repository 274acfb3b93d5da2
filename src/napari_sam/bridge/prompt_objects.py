"""Grouping a plane's prompts into objects, and predicting them with as few decoder calls as possible.

Each box (rectangle, or a polygon/ellipse with its mask) is one object. With one box, every point refines it;
with several, a point refines the first box that contains it. Points outside every box form one more object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layer_prompts import PlanePrompts


@dataclass
class PromptObject:
    """One object's prompts, in (row, col) data pixels: points (n, 2), labels (n,), box (4,) or None, mask
    (H, W) bool or None."""

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None
    mask: np.ndarray | None = None


def group_objects(prompts: PlanePrompts) -> list[PromptObject]:
    """The objects described by a plane's prompts, boxes first, in drawing order."""
    owner = np.full(len(prompts.points), -1)
    if len(prompts.boxes) == 1:
        owner[:] = 0
    else:
        for index, (r0, c0, r1, c1) in enumerate(prompts.boxes):
            inside = (owner < 0) & (prompts.points[:, 0] >= r0) & (prompts.points[:, 0] <= r1) & (
                prompts.points[:, 1] >= c0) & (prompts.points[:, 1] <= c1)
            owner[inside] = index
    objects = [PromptObject(prompts.points[owner == index], prompts.labels[owner == index], box, mask)
               for index, (box, mask) in enumerate(zip(prompts.boxes, prompts.masks))]
    loose = owner < 0
    if loose.any():
        objects.append(PromptObject(prompts.points[loose], prompts.labels[loose]))
    return objects


def _ranked(prediction, row: int):
    order = np.argsort(-prediction.scores[row])
    return prediction.masks[row][order], prediction.scores[row][order], prediction.logits[row][order]


def predict_objects(predictor, objects: list[PromptObject], mask_input=None):
    """Predict every object on the predictor's current image.

    Boxes without points go in one batched decoder call (one more for those with a mask prompt); an object
    with points gets its own call. ``mask_input`` (low-res logits) refines a single points-only object.

    Returns:
        ``(masks, scores, logits)``: lists with one entry per object, candidates sorted by score (best first):
        (c, H, W) bool, (c,) float, (c, m, m) float.
    """
    results: list = [None] * len(objects)
    plain = [i for i, o in enumerate(objects) if o.box is not None and not len(o.points) and o.mask is None]
    masked = [i for i, o in enumerate(objects) if o.box is not None and not len(o.points) and o.mask is not None]
    for group, with_masks in ((plain, False), (masked, True)):
        if not group:
            continue
        boxes = np.stack([objects[i].box for i in group])
        logits = predictor.mask_logits(np.stack([objects[i].mask for i in group])) if with_masks else None
        prediction = predictor.predict(boxes=boxes, mask_input=logits)
        for row, index in enumerate(group):
            results[index] = _ranked(prediction, row)
    for index, obj in enumerate(objects):
        if results[index] is not None:
            continue
        logits = predictor.mask_logits(obj.mask) if obj.mask is not None else None
        if logits is None and obj.box is None and len(objects) == 1:
            logits = mask_input
        prediction = predictor.predict(points=obj.points, point_labels=obj.labels,
                                       boxes=None if obj.box is None else [obj.box], mask_input=logits)
        results[index] = _ranked(prediction, 0)
    return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]
