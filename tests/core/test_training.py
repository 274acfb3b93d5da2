"""Fine-tuning (``napari_sam.core.workflows.training``): the mechanics of decoder-only, LoRA and full training on tiny
random checkpoints, what the checkpoint folder holds and that it loads, the split, the recipe's prompts, and bad
input. What training achieves on synthetic microscopy is in ``test_training_quality.py``."""

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from napari_sam import Predictor
from napari_sam.core.errors import SegmentationCancelled
from napari_sam.core.image import Frame
from napari_sam.core.settings import TrainingSettings
from napari_sam.core.workflows.training import (
    AnnotatedImage,
    WorseThanBase,
    annotated_planes,
    finetune,
    matched,
    split,
)
from napari_sam.core.workflows.training.examples import frame_labels
from napari_sam.core.workflows.training.recipe import correction_point, noisy_box
from napari_sam.demo import synthetic_cells

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = TrainingSettings(epochs=2, objects_per_step=8, patience=50)
#: what the mechanics tests look at: the last state, whether or not it validated better than the base
LAST = QUICK.replace(keep_best=False)


def cell_image(seed: int, size: int = 64):
    return synthetic_cells((size, size), seed=seed, n_cells=max(4, size // 12), radius_range=(5.0, 9.0))


def blobs(count: int, seed: int, size: int = 64):
    """``count`` annotated images of synthetic cells, 5-9 px in radius."""
    return [AnnotatedImage(*cell_image(seed + i, size), name=f"cells{i}") for i in range(count)]


def digest(folder) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())).hexdigest()


@pytest.mark.parametrize("encoder", ["none", "lora", "full"])
def test_training_writes_a_checkpoint_that_loads_everywhere(tiny_checkpoint, tmp_path, encoder):
    before = digest(tiny_checkpoint)
    base = load_file(str(tiny_checkpoint / "model.safetensors"))
    out = tmp_path / "tuned"
    result = finetune(tiny_checkpoint, blobs(4, 0), out, LAST.replace(encoder=encoder, learning_rate=3e-3),
                      device="cpu", allow_worse=True)
    assert digest(tiny_checkpoint) == before  # the base is never modified
    assert result.out == out and result.steps >= 2 and result.validations[0][0] == 0
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "processor_config.json",
                                               "napari_sam.json", "README.md", "training.json"}
    assert not list(tmp_path.glob(".*partial*"))
    weights = load_file(str(out / "model.safetensors"))
    assert not [name for name in weights if "lora" in name]  # adapters merged: a plain SAM checkpoint
    assert set(weights) == set(base)
    encoder_changed = any(not torch.equal(weights[n], base[n]) for n in base if n.startswith("vision_encoder."))
    decoder_changed = any(not torch.equal(weights[n], base[n]) for n in base if n.startswith("mask_decoder."))
    assert decoder_changed
    assert encoder_changed == (encoder != "none")
    if encoder == "lora":  # only the attention projections change in the encoder
        changed = {n for n in base if n.startswith("vision_encoder.") and not torch.equal(weights[n], base[n])}
        assert changed and all(".attn.qkv." in n for n in changed), changed
    record = json.loads((out / "training.json").read_text())
    assert record["settings"]["encoder"] == encoder and record["seed"] == 0
    assert set(record["validation_before"]) >= {"click_median_iou", "box_median_iou", "everything_recall",
                                                "everything_precision"}
    card = (out / "README.md").read_text()
    assert str(tiny_checkpoint) in card and "| click (median IoU) |" in card
    loaded = Predictor.from_pretrained(out, device="cpu")
    assert loaded.recommended.everything == result.after.everything
    image, _ = cell_image(9)
    loaded.set_image(image)
    mine = loaded.predict(points=[[32, 32]])
    result.predictor.set_image(image)
    assert np.allclose(mine.scores, result.predictor.predict(points=[[32, 32]]).scores, atol=1e-5)


def test_training_is_reproducible(tiny_checkpoint, tmp_path):
    """The same seed and data give the same weights and the same validation history (what training achieves is
    in test_training_quality.py)."""
    settings = LAST.replace(epochs=4, learning_rate=3e-3)
    first = finetune(tiny_checkpoint, blobs(4, 10), tmp_path / "a", settings, device="cpu", allow_worse=True)
    second = finetune(tiny_checkpoint, blobs(4, 10), tmp_path / "b", settings, device="cpu", allow_worse=True)
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert first.validations == second.validations and first.losses == second.losses
    other = finetune(tiny_checkpoint, blobs(4, 10), tmp_path / "c", settings.replace(seed=1), device="cpu",
                     allow_worse=True)
    assert other.losses != first.losses


def test_a_worse_model_is_refused_unless_asked(tiny_cells, tmp_path):
    """A learning rate that wrecks the bundled model's decoder: nothing is saved, and the message gives both
    figures; asked to, it is saved."""
    wreck = LAST.replace(epochs=3, learning_rate=1.0)
    with pytest.raises(WorseThanBase, match=r"worse than tiny-cells .*click 0\.\d+ vs .*--allow-worse"):
        finetune(tiny_cells, blobs(3, 20), tmp_path / "bad", wreck)
    assert not list(tmp_path.iterdir())
    result = finetune(tiny_cells, blobs(3, 20), tmp_path / "bad", wreck, allow_worse=True)
    assert result.after.score < result.before.score and (tmp_path / "bad" / "model.safetensors").exists()


def test_cancel_keeps_the_best_state(tiny_checkpoint, tmp_path):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 5  # two checks before training (after embedding, after measuring), then one a step

    result = finetune(tiny_checkpoint, blobs(4, 30), tmp_path / "out", TrainingSettings(minutes=5), device="cpu",
                      cancel=cancel, allow_worse=True)
    assert result.stopped == "cancelled" and result.steps == 3 and (tmp_path / "out" / "model.safetensors").exists()
    with pytest.raises(SegmentationCancelled):  # before the first step: nothing learnt, nothing saved
        finetune(tiny_checkpoint, blobs(4, 30), tmp_path / "early", TrainingSettings(minutes=5), device="cpu",
                 cancel=lambda: True)
    assert not (tmp_path / "early").exists()


def test_one_image_splits_its_objects():
    image, labels = cell_image(3, 96)
    parts = split(annotated_planes(image, labels, "one"), 0.25, seed=0)
    assert parts.by == "objects" and len(parts.training) == len(parts.validation) == 1
    learnt, held = set(parts.training[0].ids), set(parts.validation[0].ids)
    assert learnt and held and not learnt & held and learnt | held == set(np.unique(labels[labels > 0]).tolist())
    # segments on the other part's objects are neither right nor wrong
    truth = parts.validation[0]
    assert matched(labels, labels, ignore=truth.ignore) == (len(held), len(held), len(held), len(held))


def test_stacks_count_plane_by_plane():
    volume = np.zeros((3, 32, 32), np.uint16)
    labels = np.zeros((3, 32, 32), np.uint32)
    labels[0, 4:12, 4:12] = 1
    labels[2, 20:30, 20:30] = 2
    planes = annotated_planes(volume, labels, "stack")
    assert [p.name for p in planes] == ["stack[0]", "stack[2]"] and [p.ids for p in planes] == [[1], [2]]


def test_objects_a_tile_cuts_are_learnt_from_the_tile_that_holds_them():
    labels = np.zeros((40, 40), np.int32)
    labels[2:8, 2:8] = 1          # inside the tile
    labels[15:25, 15:25] = 2      # cut by the tile's border at 20
    tile = frame_labels(labels, Frame(0, 0, 20, 20, 1.0), (20, 20), (24, 24))
    assert set(torch.unique(tile).tolist()) == {-1, 0, 1}
    assert (tile[20:] == -1).all() and (tile[:, 20:] == -1).all()  # padding


def test_prompts_follow_sam_training():
    rng = np.random.default_rng(0)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[10:30, 20:50] = True
    boxes = np.array([noisy_box(rng, mask) for _ in range(200)])
    assert np.abs(boxes.mean(axis=0) - [10, 20, 29, 49]).max() < 1.0  # noise around the true box
    assert 1.0 < boxes[:, 3].std() < 4.0  # 10% of the 30-pixel side
    previous = mask.clone()
    previous[10:30, 40:50] = False  # the right third missed
    point, label = correction_point(rng, previous, mask)
    assert label == 1 and 40 <= point[1] < 50
    spilled = mask.clone()
    spilled[30:50, 20:50] = True
    point, label = correction_point(rng, spilled, mask)
    assert label == 0 and point[0] >= 30


@pytest.mark.parametrize("labels, message", [
    (np.zeros((64, 63), np.int32), r"shape \(64, 63\) differs from the image's \(64, 64\)"),
    (np.ones((64, 64), np.float32), "must be integer ids"),
])
def test_bad_pairs_are_named(labels, message):
    with pytest.raises(ValueError, match=message):
        annotated_planes(np.zeros((64, 64), np.uint8), labels, "cells.tif")


@pytest.mark.parametrize("count, message", [(0, "hold no objects"), (1, "hold one object")])
def test_too_few_objects_are_refused(tiny_checkpoint, tmp_path, count, message):
    labels = np.zeros((64, 64), np.int32)
    if count:
        labels[10:30, 10:30] = 1
    with pytest.raises(ValueError, match=message):
        finetune(tiny_checkpoint, [AnnotatedImage(np.zeros((64, 64), np.uint8), labels, "x")], tmp_path / "o",
                 device="cpu")


def test_an_existing_output_folder_is_refused(tiny_checkpoint, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists: choose another, or replace it"):
        finetune(tiny_checkpoint, blobs(3, 0), tmp_path / "out", QUICK, device="cpu")
    with pytest.raises(ValueError, match="is the base checkpoint's"):
        finetune(tiny_checkpoint, blobs(3, 0), tiny_checkpoint, QUICK, device="cpu", overwrite=True)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_a_concept_checkpoint_cannot_be_trained(concept_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="segments concepts.*SAM, SAM-HQ, SAM2.1"):
        finetune(concept_checkpoint, blobs(3, 0), tmp_path / "o", QUICK, device="cpu")


@pytest.mark.parametrize("family", ["sam_hq", "sam2"])
def test_other_families_train_their_decoder(family_checkpoints, tmp_path, family):
    base = load_file(str(family_checkpoints[family] / "model.safetensors"))
    result = finetune(family_checkpoints[family], blobs(3, 40), tmp_path / "o", LAST.replace(epochs=1),
                      device="cpu", allow_worse=True)
    assert Predictor.from_pretrained(result.out, device="cpu").family.name == family
    weights = load_file(str(result.out / "model.safetensors"))
    assert all(torch.equal(weights[n], base[n]) for n in base if n.startswith("vision_encoder."))
    assert any(not torch.equal(weights[n], base[n]) for n in base if n.startswith("mask_decoder."))


@pytest.mark.parametrize("thresholds", [(0.88, 0.95), (0.6, 0.8)])
def test_calibration_sees_what_segment_everything_finds(tiny_cells, thresholds):
    """The grid decoded once without NMS, then filtered and merged per pair of thresholds, gives segment
    everything's labels for that pair."""
    from napari_sam import segment_everything
    from napari_sam.core.workflows.everything import merge_frames, segment_frames
    from napari_sam.core.workflows.training.validation import _passing

    image, _ = synthetic_cells((128, 128), seed=4, n_cells=12)
    settings = tiny_cells.recommended.everything.replace(method="grid", pred_iou_thresh=thresholds[0],
                                                         stability_score_thresh=thresholds[1])
    part = segment_frames(tiny_cells, image, settings.replace(pred_iou_thresh=0.5, stability_score_thresh=0.8,
                                                              box_nms_thresh=1.0))
    mine = merge_frames([_passing(part, settings)], settings).labels
    assert np.array_equal(mine, segment_everything(tiny_cells, image, settings).labels)
