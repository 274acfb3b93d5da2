"""Held-out synthetic figures of a SAM checkpoint, through the public API with its defaults: clicks, boxes, segment
everything and 3D propagation on :mod:`napari_sam.testing.synthetic_microscopy` scenes whose seeds training never
draws (training draws seeds below 2**31, these are above). ``scripts/evaluate_tiny_cells.py`` prints them per look;
the tests check the bundled model with them.
"""

from __future__ import annotations

import numpy as np

from ..core.objects import mask_iou
from ..core.settings import EverythingSettings
from ..core.workflows import propagate, segment_everything
from ..core.workflows.training import matched
from .synthetic_microscopy import LOOKS, synthetic_scene, synthetic_stack

#: The first held-out seed.
HELD_OUT = 2**31


def best_mask(prediction) -> np.ndarray:
    """The first object's best-scoring mask, image-sized (whatever frame it was decoded in)."""
    return prediction.full_masks(prediction.best_masks())[0]


def scene_figures(predictor, look: str, scenes: int, rng, everything: bool = True) -> dict:
    """Click and box median IoUs and segment everything's recall/precision on ``scenes`` held-out 512² scenes of
    ``look`` (objects of at least 12 pixels are prompted; ``rng`` picks the click inside each). Segment everything
    runs with Meta's thresholds (``EverythingSettings()``) and, where the checkpoint recommends others, with those
    too (``recommended_`` figures)."""
    clicks, boxes = [], []
    runs = {"": EverythingSettings()}
    if predictor.recommended.everything != EverythingSettings():
        runs["recommended_"] = predictor.recommended.everything
    totals = {prefix: np.zeros(4, dtype=np.int64) for prefix in runs}
    for index in range(scenes):
        image, labels, _ = synthetic_scene((512, 512), look, seed=HELD_OUT + 1000 * list(LOOKS).index(look) + index)
        predictor.set_image(image)
        for cell in range(1, int(labels.max()) + 1):
            target = labels == cell
            rows, cols = np.nonzero(target)
            if len(rows) < 12:  # a few pixels at the border
                continue
            pick = rng.integers(len(rows))
            clicks.append(mask_iou(best_mask(predictor.predict(points=[[rows[pick], cols[pick]]])), target))
            box = [rows.min(), cols.min(), rows.max(), cols.max()]
            boxes.append(mask_iou(best_mask(predictor.predict(boxes=[box])), target))
        if everything:
            for prefix, settings in runs.items():
                totals[prefix] += matched(labels, np.asarray(segment_everything(predictor, image, settings).labels))
    figures = {"objects": len(clicks), "click_median_iou": round(float(np.median(clicks)), 3),
               "box_median_iou": round(float(np.median(boxes)), 3)}
    if everything:
        for prefix, counts in totals.items():
            figures[f"{prefix}everything_recall"] = round(float(counts[1] / max(1, counts[0])), 3)
            figures[f"{prefix}everything_precision"] = round(float(counts[3] / max(1, counts[2])), 3)
    return figures


def stack_figures(predictor, look, stacks: int, rng, objects_per_stack: int = 6) -> dict:
    """Median 3D IoU of ``propagate`` (the checkpoint's settings, with and without the previous slice's mask as a
    prompt) from one click near the centre of each object's middle slice, on held-out 24 x 256² stacks of ``look``
    (a name or a Look)."""
    with_mask, without = [], []
    for index in range(stacks):
        volume, labels, _ = synthetic_stack((24, 256, 256), look, seed=HELD_OUT + 500_000 + index)
        ids = [i for i in np.unique(labels)[1:] if (labels == i).sum() > 60]
        for cell in rng.choice(ids, size=min(objects_per_stack, len(ids)), replace=False):
            target = labels == cell
            slices = np.nonzero(target.any(axis=(1, 2)))[0]
            middle = int(slices[len(slices) // 2])
            rows, cols = np.nonzero(target[middle])
            depth = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
            predictor.set_image(volume[middle])
            first = best_mask(predictor.predict(points=[[rows[depth], cols[depth]]]))
            for store, mask_input in ((with_mask, True), (without, False)):
                result = propagate(predictor, volume, middle, 0, first, use_mask_input=mask_input)
                store.append(mask_iou(np.asarray(result.masks), target))
    return {"objects": len(with_mask), "median_3d_iou_mask_input": round(float(np.median(with_mask)), 3),
            "median_3d_iou_without_mask_input": round(float(np.median(without)), 3)}
