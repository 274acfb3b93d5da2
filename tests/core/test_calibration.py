"""``scripts/calibrate_tiny_cells.py``: scaling a checkpoint's mask logits keeps its masks, predicted IoUs and best
candidates, and makes the masks more stable."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from napari_sam import Predictor
from napari_sam.core.workflows import stability_score

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "calibrate_tiny_cells.py"


def calibrate_module():
    spec = importlib.util.spec_from_file_location("calibrate_tiny_cells", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaled_logits_keep_the_masks_and_raise_stability(tiny_checkpoint, tmp_path):
    import torch

    out = tmp_path / "calibrated"
    calibrate_module().calibrate(Path(tiny_checkpoint), out, 2.0)
    assert json.loads((out / "training.json").read_text())["mask_logit_scale"] == 2.0
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    image = np.random.default_rng(0).integers(0, 255, (96, 128), dtype=np.uint8)
    predictions = []
    for folder in (tiny_checkpoint, out):
        predictor = Predictor.from_pretrained(str(folder), device="cpu")
        predictor.set_image(image)
        predictions.append(predictor.predict(points=[[40, 60], [70, 20]], point_labels=[1, 0]))
    before, after = predictions
    np.testing.assert_allclose(after.logits, 2 * before.logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(after.masks, before.masks)
    np.testing.assert_allclose(after.scores, before.scores, atol=1e-6)
    assert after.masks.any() and not after.masks.all()
    logits = [torch.from_numpy(np.asarray(p.logits[0], dtype=np.float32)) for p in predictions]
    assert (stability_score(logits[1], 0.0, 1.0) >= stability_score(logits[0], 0.0, 1.0)).all()


def test_a_scale_that_is_not_positive_is_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="--scale must be positive"):
        calibrate_module().calibrate(Path(tiny_checkpoint), tmp_path / "out", 0.0)
