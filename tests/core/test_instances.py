"""Automatic instance segmentation with an instance head: what the head learns and how its maps become objects, the
head in a checkpoint folder (saved, loaded, refused when it does not fit), training it through ``finetune`` with
``instances``, and segment everything's ``method`` on tiny random checkpoints and other families. What the bundled
head achieves against the grid is in ``test_instances_quality.py``."""

import json
import shutil

import numpy as np
import pytest
import torch

from napari_sam import Predictor, segment_everything
from napari_sam.core.decoding import HEAD_FILE, InstanceHead, encoder_fingerprint, new_head, same_encoder, save_head
from napari_sam.core.errors import ModelLoadError
from napari_sam.core.settings import EverythingSettings, TrainingSettings
from napari_sam.core.workflows.instances import instance_targets, split_instances
from napari_sam.core.workflows.training import AnnotatedImage, finetune, matched
from napari_sam.demo import synthetic_cells
from napari_sam.testing.synthetic_microscopy import synthetic_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(count: int, seed: int, size: int = 64):
    return [AnnotatedImage(*synthetic_cells((size, size), seed=seed + i, n_cells=6, radius_range=(5.0, 9.0)),
                           name=f"cells{i}") for i in range(count)]


@pytest.mark.parametrize("look", ["nuclei", "crowded"])
def test_the_maps_a_head_learns_give_back_the_objects(look):
    """Perfect maps (the targets themselves) split by the watershed give back the objects, touching ones apart."""
    _, labels, _ = synthetic_scene((256, 256), look, seed=11)
    maps, known = instance_targets(labels.astype(np.int64))
    assert known.all() and maps.shape == (3, 256, 256)
    inside = labels > 0
    assert maps[1][inside].min() == 0 and maps[1][inside].max() <= 1 and maps[2][inside].max() == 1
    assert (maps[1:, ~inside] == 0).all()
    found = split_instances(maps, EverythingSettings(method="instances", min_instance_area=0, min_seed_area=0))
    objects, hit, segments, right = matched(labels, found, 0.8)
    assert hit >= 0.9 * objects and right >= 0.9 * segments, (objects, hit, segments, right)


def test_unknown_pixels_are_not_learnt():
    labels = np.zeros((32, 32), np.int64)
    labels[4:12, 4:12] = 1
    labels[20:, :] = -1
    maps, known = instance_targets(labels)
    assert not known[20:].any() and known[:20].all() and maps[0, 4:12, 4:12].all() and maps[0].sum() == 64


def with_head(source, folder, model=None, seed=0):
    """A copy of the checkpoint folder ``source`` with a new (untrained) head; returns the head."""
    shutil.copytree(source, folder)
    predictor = Predictor.from_pretrained(folder, device="cpu")
    embedded = predictor.family.embed(predictor.model, torch.zeros(1, 3, *predictor.geometry.pad_size))
    head = new_head(model or predictor.model, *embedded, width=16, seed=seed)
    values = {"instances": save_head(head, folder)}
    (folder / "napari_sam.json").write_text(json.dumps(values), encoding="utf-8")
    return head


def test_a_head_is_saved_beside_its_checkpoint_and_loaded_with_it(tiny_checkpoint, tmp_path):
    head = with_head(tiny_checkpoint, tmp_path / "with-head")
    predictor = Predictor.from_pretrained(tmp_path / "with-head", device="cpu")
    assert predictor.has_head and not Predictor.from_pretrained(tiny_checkpoint, device="cpu").has_head
    loaded = predictor.instance_head()
    assert isinstance(loaded, InstanceHead) and loaded.spec == head.spec
    for name, tensor in head.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])
    image = synthetic_cells((64, 64), seed=3)[0]
    result = segment_everything(predictor, image, method="instances", foreground_thresh=0.0,
                                center_distance_thresh=1.0, boundary_distance_thresh=0.0, min_instance_area=0)
    assert result.labels.shape == (64, 64)


def test_bad_heads_are_refused_with_a_clear_message(tiny_checkpoint, tiny_checkpoints, tmp_path):
    image = synthetic_cells((64, 64), seed=3)[0]
    bare = Predictor.from_pretrained(tiny_checkpoint, device="cpu")
    with pytest.raises(ValueError, match="has no instance head.*napari-sam train .*--instances"):
        segment_everything(bare, image, method="instances")

    folder = tmp_path / "corrupt"
    with_head(tiny_checkpoint, folder)
    (folder / HEAD_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="cannot be read.*corrupt"):
        segment_everything(Predictor.from_pretrained(folder, device="cpu"), image, method="instances+sam")
    (folder / HEAD_FILE).unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        Predictor.from_pretrained(folder, device="cpu").instance_head()

    # a head trained on another encoder (the 256-px tiny checkpoint's weights differ): its embeddings differ
    other = Predictor.from_pretrained(tiny_checkpoints[256], device="cpu")
    foreign = tmp_path / "foreign"
    with_head(tiny_checkpoint, foreign, model=other.model)
    with pytest.raises(ModelLoadError, match="trained on another image encoder"):
        Predictor.from_pretrained(foreign, device="cpu").instance_head()

    (foreign / "napari_sam.json").write_text(json.dumps({"instances": {"width": 16}}), encoding="utf-8")
    with pytest.raises(ModelLoadError, match='"instances" section .* malformed'):
        Predictor.from_pretrained(foreign, device="cpu").instance_head()


def test_the_encoder_fingerprint_ignores_the_decoder_and_the_precision(tiny_checkpoint):
    model = Predictor.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32).model
    recorded = json.loads(json.dumps(encoder_fingerprint(model)))  # as napari_sam.json keeps it
    assert same_encoder(recorded, Predictor.from_pretrained(tiny_checkpoint, device="cpu", dtype="bfloat16").model)
    with torch.no_grad():
        next(model.mask_decoder.parameters()).add_(1.0)
        assert same_encoder(recorded, model)
        next(model.vision_encoder.parameters()).add_(0.05)
    assert not same_encoder(recorded, model)


def test_training_a_head_writes_a_checkpoint_whose_segment_everything_uses_it(tiny_checkpoint, tmp_path):
    out = tmp_path / "head"
    progress = []
    result = finetune(tiny_checkpoint, blobs(4, 0), out, TrainingSettings(instances=True, epochs=3,
                                                                           learning_rate=3e-3),
                      device="cpu", allow_worse=True, progress=progress.append)
    assert {"embedding", "measuring the base", "training", "calibrating", "saving"} <= {p.phase for p in progress}
    assert result.steps >= 3 and (out / HEAD_FILE).is_file()
    # the model's own weights are the base's; clicks and boxes are unchanged
    assert (out / "model.safetensors").read_bytes() == (tiny_checkpoint / "model.safetensors").read_bytes() or \
        _same_weights(tiny_checkpoint, out)
    assert result.after.click == result.before.click and result.after.box == result.before.box
    values = json.loads((out / "napari_sam.json").read_text())
    assert values["segment_everything"]["method"] == "instances" and values["instances"]["file"] == HEAD_FILE
    assert "instance head" in (out / "README.md").read_text()
    tuned = Predictor.from_pretrained(out, device="cpu")
    assert tuned.recommended.everything.method == "instances" and tuned.has_head
    image = blobs(1, 50)[0].image
    result = segment_everything(tuned, image)  # the checkpoint's method: instances
    assert result.labels.shape == image.shape

    # a decoder-only model trained from it keeps its head (its encoder is the same)
    again = finetune(out, blobs(3, 10), tmp_path / "decoder", TrainingSettings(epochs=1), device="cpu",
                     allow_worse=True)
    assert (again.out / HEAD_FILE).read_bytes() == (out / HEAD_FILE).read_bytes()
    assert Predictor.from_pretrained(again.out, device="cpu").instance_head() is not None


def _same_weights(a, b) -> bool:
    from safetensors.torch import load_file

    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_instances_needs_the_frozen_encoder():
    with pytest.raises(ValueError, match="frozen encoder.*encoder 'none'"):
        TrainingSettings(instances=True, encoder="lora")


@pytest.mark.parametrize("family", ["sam2", "sam_hq"])
def test_heads_of_other_families_read_their_features(family_checkpoints, tmp_path, family):
    """SAM2.1's head reads its high-resolution maps too; SAM-HQ's reads the embedding only."""
    folder = tmp_path / family
    head = with_head(family_checkpoints[family], folder)
    assert (len(head.spec.extra_channels) == 2) == (family == "sam2")
    predictor = Predictor.from_pretrained(folder, device="cpu")
    image = synthetic_cells((96, 96), seed=3)[0]
    for method in ("instances", "instances+sam"):
        result = segment_everything(predictor, image, method=method, foreground_thresh=0.0,
                                    center_distance_thresh=1.0, boundary_distance_thresh=0.0, min_instance_area=0)
        assert result.labels.shape == (96, 96)
