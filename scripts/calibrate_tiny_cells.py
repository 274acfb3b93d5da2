"""Calibrate the stability of a tiny-cells checkpoint: scale its mask logits by a constant (a temperature).

SAM's stability score compares a mask thresholded at logit +1 with the same mask at -1, so it measures how steep
the logits are at the mask's edge. tiny-cells' logits are shallower than SAM's (its edges lie on a 32 x 32 token
grid upsampled 16x), so Meta's stability filter (0.95) drops masks that are right. Multiplying the output
hypernetworks' last layer by ``--scale`` multiplies every mask logit by it: the masks at logit 0, the predicted
IoUs and the best candidate stay exactly the same; only the stability scores (and the logits handed on as mask
prompts) change.

    python scripts/calibrate_tiny_cells.py --init stage8 --out stage9 --scale 2

Writes a ``save_pretrained`` folder (safetensors only) with the other files of ``--init`` copied, and the scale
recorded in ``training.json`` (``"mask_logit_scale"``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from transformers import SamModel


def calibrate(init: Path, out: Path, scale: float) -> None:
    if not scale > 0:
        raise ValueError(f"--scale must be positive, not {scale}")
    model = SamModel.from_pretrained(init, use_safetensors=True)
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.mul_(scale)
            mlp.proj_out.bias.mul_(scale)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for path in init.iterdir():  # the same architecture: its config.json as it was
        if path.name != "model.safetensors" and path.is_file():
            shutil.copy2(path, out / path.name)
    record = out / "training.json"
    summary = json.loads(record.read_text()) if record.exists() else {}
    summary["mask_logit_scale"] = summary.get("mask_logit_scale", 1.0) * scale
    record.write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", required=True, help="the tiny-cells folder to calibrate")
    parser.add_argument("--out", required=True, help="folder to write the calibrated checkpoint to")
    parser.add_argument("--scale", type=float, default=2.0, help="factor for every mask logit")
    args = parser.parse_args()
    calibrate(Path(args.init), Path(args.out), args.scale)


if __name__ == "__main__":
    main()
