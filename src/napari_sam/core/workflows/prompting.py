"""Predicting prompted objects (points, a box, a mask prompt each) with as few decoder calls as possible.

Positions are (row, col) in the image's data pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decoding import ObjectPrompt
from ..image import Frame
from ..objects import MaskObject


@dataclass
class ObjectResult:
    """One object's candidate masks, best-scoring first, in the image region of ``frame``: masks (c, h, w) bool,
    scores (c,), logits (c, m, m) in the frame's model input."""

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    frame: Frame


def _ranked(prediction, row: int) -> ObjectResult:
    order = np.argsort(-prediction.scores[row])
    return ObjectResult(prediction.masks[row][order], prediction.scores[row][order], prediction.logits[row][order],
                        prediction.frame)


def _mask_logits(predictor, masks: list[MaskObject], frame):
    """Low-res logits of cropped mask prompts in ``frame``."""
    return np.concatenate([predictor.mask_logits(m.mask, frame=frame, offset=(m.rows.start, m.cols.start))
                           for m in masks])


def predict_objects(predictor, objects: list[ObjectPrompt], mask_input=None) -> list[ObjectResult]:
    """Predict every object on the predictor's current image.

    On an image seen whole, boxes without points go in one batched decoder call (one more for those with a mask
    prompt); an object with points gets its own call. On a tiled image, each object is decoded in its own frame.
    ``mask_input`` (``(logits, frame)`` from a previous result) refines a single points-only object.

    Returns one :class:`ObjectResult` per object.
    """
    results: list = [None] * len(objects)
    if not predictor.tiled:
        plain = [i for i, o in enumerate(objects) if o.box is not None and not len(o.points) and o.mask is None]
        masked = [i for i, o in enumerate(objects) if o.box is not None and not len(o.points) and o.mask is not None]
        for group, with_masks in ((plain, False), (masked, True)):
            if not group:
                continue
            boxes = np.stack([np.asarray(objects[i].box) for i in group])
            shared = predictor.frame_for(boxes=boxes)
            masks = [mask for mask in (objects[i].mask for i in group) if mask is not None]
            prediction = predictor.predict(boxes=boxes, mask_input=_mask_logits(predictor, masks, shared)
                                           if with_masks else None, frame=shared if with_masks else None)
            for row, index in enumerate(group):
                results[index] = _ranked(prediction, row)
    for index, obj in enumerate(objects):
        if results[index] is not None:
            continue
        box = None if obj.box is None else [obj.box]
        frame: Frame | None = None
        logits: np.ndarray | None = None
        if obj.mask is not None:
            frame = predictor.frame_for(obj.points if len(obj.points) else None, box)
            logits = _mask_logits(predictor, [obj.mask], frame)
        elif obj.box is None and len(objects) == 1 and mask_input is not None:
            logits, frame = mask_input[0], mask_input[1]
        prediction = predictor.predict(points=obj.points if len(obj.points) else None, point_labels=obj.labels
                                       if len(obj.points) else None, boxes=box, mask_input=logits, frame=frame)
        results[index] = _ranked(prediction, 0)
    return results
