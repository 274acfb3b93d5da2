"""Held-out synthetic figures of a tiny-cells checkpoint, per look, through the public API.

For every look of ``napari_sam.testing.synthetic_microscopy.LOOKS``, on scenes whose seeds training never draws
(training seeds are below 2**31, these are above):
- click: median IoU of the best-scoring mask for one click at a random pixel inside each object;
- box: median IoU for each object's bounding box;
- everything: recall of ``segment_everything`` with Meta's 0.88 / 0.95 thresholds (and with the checkpoint's
  recommended ones, where it recommends others), an object found when a segment overlaps it at IoU >= 0.5, and
  the share of segments that match an object (precision);
- 3D (``--stacks``): median 3D IoU of ``propagate`` from one click near the centre of each object's middle slice
  (24 x 256² stacks of nuclei 10-30 px across), with the checkpoint's settings, with and without the previous
  slice's mask as a prompt.

    python scripts/evaluate_tiny_cells.py [--model tiny-cells] [--scenes 3] [--stacks 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from napari_sam import Predictor
from napari_sam.testing.held_out import scene_figures, stack_figures
from napari_sam.testing.synthetic_microscopy import LOOKS, with_overrides


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
