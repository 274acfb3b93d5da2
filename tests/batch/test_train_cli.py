"""``napari-sam train``: from image and labels files in pairs, from an image series' folder and from a batch run's
output folder, and its messages for bad input."""

import json

import numpy as np
import pytest
import tifffile

from napari_sam import Predictor
from napari_sam.batch import Series, run_batch
from napari_sam.cli import main
from napari_sam.demo import synthetic_cells

from helpers import batch_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = ["--epochs", "1", "--objects-per-step", "8", "--allow-worse"]


@pytest.fixture()
def pairs(tmp_path):
    """Three images of cells and their labels files: ([images], [labels])."""
    images, labels = [], []
    for index in range(3):
        image, truth = synthetic_cells((64, 64), seed=500 + index, n_cells=5, radius_range=(6.0, 10.0))
        images.append(tmp_path / f"cells_{index}.tif")
        labels.append(tmp_path / f"cells_{index}_labels.tif")
        tifffile.imwrite(images[-1], image)
        tifffile.imwrite(labels[-1], truth)
    return [str(p) for p in images], [str(p) for p in labels]


def record(folder) -> dict:
    return json.loads((folder / "training.json").read_text())


def test_train_from_pairs(pairs, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train", "--images", *pairs[0], "--labels", *pairs[1], "--model", str(tiny_checkpoint),
                 "--out", str(out), "--device", "cpu", *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "validation (" in printed and f"saved {out}" in printed
    assert record(out)["data"]["training_images"] + record(out)["data"]["validation_images"] == 3
    assert record(out)["settings"]["epochs"] == 1
    Predictor.from_pretrained(out, device="cpu")


def test_train_an_instance_head_from_pairs(pairs, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "head"
    assert main(["train", "--images", *pairs[0], "--labels", *pairs[1], "--model", str(tiny_checkpoint), "--out",
                 str(out), "--device", "cpu", "--instances", "--epochs", "2", "--allow-worse"]) == 0
    assert f"saved {out}" in capsys.readouterr().out
    assert record(out)["settings"]["instances"] and (out / "instance_head.safetensors").is_file()
    predictor = Predictor.from_pretrained(out, device="cpu")
    assert predictor.recommended.everything.method == "instances" and predictor.instance_head() is not None
    assert main(["train", "--images", *pairs[0], "--labels", *pairs[1], "--model", str(tiny_checkpoint), "--out",
                 str(tmp_path / "no"), "--instances", "--encoder", "lora"]) == 2
    assert "encoder 'none' with instances" in capsys.readouterr().err


def test_train_from_a_series_and_a_batch_run(tmp_path, tiny_checkpoint):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(4):
        image, _ = synthetic_cells((64, 64), seed=600 + index, n_cells=5, radius_range=(6.0, 10.0))
        tifffile.imwrite(images / f"field_{index}.tif", image)
    series_out = tmp_path / "annotations"
    with Series([str(images)], series_out) as series:
        for index in (0, 2):  # a person corrected two of the four
            series.save(index, synthetic_cells((64, 64), seed=600 + index, n_cells=5, radius_range=(6.0, 10.0))[1])
    assert main(["train", str(series_out), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "m1"),
                 "--device", "cpu", *QUICK]) == 0
    data = record(tmp_path / "m1")["data"]
    assert data["training_images"] + data["validation_images"] == 2
    batch_out = tmp_path / "run"
    run_batch([str(images)], str(batch_out), batch_config(), progress=False)
    assert main(["train", str(batch_out), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "m2"),
                 "--device", "cpu", *QUICK]) == 0
    data = record(tmp_path / "m2")["data"]
    assert data["training_images"] + data["validation_images"] == 4


@pytest.mark.parametrize("arguments, message", [
    (["--images", "{0}", "--labels"], "expected at least one argument"),
    (["--images", "{0}", "{1}", "--labels", "{2}"], "go in pairs: 2 image"),
    (["{folder}", "--images", "{0}", "--labels", "{3}"], "not both"),
    (["--images", "{0}", "--labels", "{3}", "--minutes", "1", "--epochs", "2"], "--minutes or --epochs"),
    (["--images", "{0}", "--labels", "{wrong}"], "shape (32, 32) differs from the image's (64, 64)"),
    (["--images", "{0}", "--labels", "{3}", "--out", "{exists}"], "exists: choose another"),
    (["{empty}"], "holds no annotated images"),
])
def test_bad_input_is_named(pairs, tiny_checkpoint, tmp_path, capsys, arguments, message):
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "x").write_text("")
    (tmp_path / "empty").mkdir()
    tifffile.imwrite(tmp_path / "wrong.tif", np.zeros((32, 32), np.uint16))
    names = {"folder": str(tmp_path), "exists": str(tmp_path / "exists"), "empty": str(tmp_path / "empty"),
             "wrong": str(tmp_path / "wrong.tif")}
    filled = [a.format(*pairs[0], *pairs[1], **names) for a in arguments]
    out = [] if "--out" in filled else ["--out", str(tmp_path / "new")]
    try:
        code = main(["train", *filled, *out, "--model", str(tiny_checkpoint), "--device", "cpu"])
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
