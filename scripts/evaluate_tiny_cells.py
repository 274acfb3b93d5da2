"""Held-out synthetic figures of a tiny-cells checkpoint, per look, through the public API with its defaults.

For every look of ``napari_sam.synthetic_microscopy.LOOKS``, on scenes whose seeds training never draws (training
seeds are below 2**31, these are above):
- click: median IoU of the best-scoring mask for one click at a random pixel inside each object;
- box: median IoU for each object's bounding box;
- everything: recall of ``segment_everything`` with its defaults (Meta's 0.88 / 0.95 thresholds), an object found
  when a segment overlaps it at IoU >= 0.5, and the share of segments that match an object (precision);
- 3D (``--stacks``): median 3D IoU of ``propagate`` from one click near the centre of each object's middle slice
  (24 x 256² stacks of nuclei 10-30 px across), with the API's defaults (mask input on) and without mask input.

    python scripts/evaluate_tiny_cells.py [--model tiny-cells] [--scenes 3] [--stacks 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from napari_sam import Predictor
from napari_sam.core.automatic_mask_generator import segment_everything
from napari_sam.core.propagation import propagate
from napari_sam.synthetic_microscopy import LOOKS, synthetic_scene, synthetic_stack, with_overrides

HELD_OUT = 2**31  #: first held-out seed


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def matched(labels: np.ndarray, found: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int, int]:
    """(objects, objects found at IoU >= threshold, segments, segments matching an object)."""
    pairs = np.stack([labels.ravel(), found.ravel()], 1).astype(np.int64)
    truth_area = np.bincount(labels.ravel())
    found_area = np.bincount(found.ravel())
    keys, counts = np.unique(pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0)], axis=0, return_counts=True)
    ious = counts / (truth_area[keys[:, 0]] + found_area[keys[:, 1]] - counts)
    good = keys[ious >= threshold]
    return (int((truth_area[1:] > 0).sum()), len(np.unique(good[:, 0])), int((found_area[1:] > 0).sum()),
            len(np.unique(good[:, 1])))


def scene_figures(predictor, look: str, scenes: int, rng) -> dict:
    clicks, boxes, totals = [], [], np.zeros(4, dtype=np.int64)
    for index in range(scenes):
        image, labels, _ = synthetic_scene((512, 512), look, seed=HELD_OUT + 1000 * list(LOOKS).index(look) + index)
        predictor.set_image(image)
        for cell in range(1, int(labels.max()) + 1):
            target = labels == cell
            rows, cols = np.nonzero(target)
            if len(rows) < 12:  # a few pixels at the border
                continue
            pick = rng.integers(len(rows))
            clicks.append(iou(predictor.predict(points=[[rows[pick], cols[pick]]]).best_masks()[0], target))
            box = [rows.min(), cols.min(), rows.max(), cols.max()]
            boxes.append(iou(predictor.predict(boxes=[box]).best_masks()[0], target))
        found = segment_everything(predictor, image).labels
        totals += matched(labels, np.asarray(found))
    return {"objects": int(totals[0]), "click_median_iou": round(float(np.median(clicks)), 3),
            "box_median_iou": round(float(np.median(boxes)), 3),
            "everything_recall": round(float(totals[1] / max(1, totals[0])), 3),
            "everything_precision": round(float(totals[3] / max(1, totals[2])), 3)}


def stack_figures(predictor, look: str, stacks: int, rng, objects_per_stack: int = 6) -> dict:
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
            first = predictor.predict(points=[[rows[depth], cols[depth]]]).best_masks()[0]
            for store, mask_input in ((with_mask, True), (without, False)):
                result = propagate(predictor, volume, middle, 0, first, use_mask_input=mask_input)
                store.append(iou(np.asarray(result.masks), target))
    return {"objects": len(with_mask), "median_3d_iou_defaults": round(float(np.median(with_mask)), 3),
            "median_3d_iou_without_mask_input": round(float(np.median(without)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-cells")
    parser.add_argument("--scenes", type=int, default=3, help="512² scenes per look")
    parser.add_argument("--stacks", type=int, default=3, help="24 x 256² stacks for propagation (nuclei look)")
    parser.add_argument("--looks", nargs="*", default=list(LOOKS))
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    predictor = Predictor.from_pretrained(args.model, device="cpu")
    rng = np.random.default_rng(0)
    figures, start = {}, time.time()
    for look in args.looks:
        figures[look] = scene_figures(predictor, look, args.scenes, rng)
        print(look, figures[look], f"{time.time() - start:.0f} s", flush=True)
    if args.stacks:
        # nuclei of 10-30 px in 256² slices (the look's sizes are for a 512-pixel field)
        figures["3d_nuclei"] = stack_figures(predictor, with_overrides("nuclei", diameter=(20.0, 60.0)),
                                             args.stacks, rng)
        print("3d_nuclei", figures["3d_nuclei"], flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
