"""SAM3 concept segmentation end to end on a tiny ``Sam3Model`` and a tokenizer built here (no hub).

The reference follows SAM3's processor as documented (its module imports torchvision): the image stretched to the
square input and normalised with mean/std 0.5, the text padded to 32 tokens, boxes normalised to (cx, cy, w, h);
then ``post_process_instance_segmentation``: score sigmoid(logit) x sigmoid(presence), masks as probabilities
upsampled bilinearly to the image and thresholded at 0.5.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_equivalence import make_image

from napari_sam import Predictor
from napari_sam.core.random_weights import random_family_model, tiny_clip_tokenizer
from napari_sam.core.settings import TilingSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 56


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("sam3")
    random_family_model("sam3", SIZE, seed=2).save_pretrained(path)
    tiny_clip_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def predictor(folder):
    return Predictor.from_pretrained(folder, device="cpu", tiling=TilingSettings(mode="whole"))


def reference(model, tokenizer, image_uint8, text, boxes=None, labels=None, threshold=0.0):
    height, width = image_uint8.shape[:2]
    rgb = torch.from_numpy(np.ascontiguousarray(image_uint8[..., :3])).permute(2, 0, 1)[None]
    pixels = F.interpolate(rgb, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    pixels = (pixels.float() - 127.5) / 127.5
    tokens = tokenizer([text], padding="max_length", max_length=32, return_tensors="pt")
    inputs = {}
    if boxes is not None:
        xyxy = torch.tensor([[c0, r0, c1, r1] for r0, c0, r1, c1 in boxes], dtype=torch.float32)
        xyxy = xyxy / torch.tensor([width, height, width, height])
        inputs["input_boxes"] = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)[None]
        inputs["input_boxes_labels"] = torch.tensor(labels)[None]
    with torch.no_grad():
        out = model(pixel_values=pixels, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                    **inputs)
    scores = out.pred_logits[0].sigmoid() * out.presence_logits[0].sigmoid()
    keep = scores > threshold
    probabilities = F.interpolate(out.pred_masks[0][keep][:, None].sigmoid(), size=(height, width), mode="bilinear",
                                  align_corners=False)[:, 0]
    order = torch.argsort(scores[keep], descending=True, stable=True)
    return (probabilities > 0.5)[order].numpy(), scores[keep][order].numpy()


@pytest.mark.parametrize("kind", ["rgb_uint8", "gray_uint16"])
@pytest.mark.parametrize("with_boxes", [False, True])
def test_matches_sam3s_documented_path(kind, with_boxes, predictor):
    image, limits, reference_image = make_image(kind, (70, 90), seed=6)
    predictor.set_image(image, contrast_limits=limits)
    boxes, labels = ([[10.0, 12.0, 40.0, 50.0], [45.0, 60.0, 65.0, 85.0]], [1, 0]) if with_boxes else (None, None)
    ours = predictor.segment_concept("nucleus", exemplar_boxes=boxes, exemplar_labels=labels, threshold=0.0)
    masks, scores = reference(predictor.model, predictor.concept.tokenizer, reference_image, "nucleus", boxes, labels)
    nonempty = masks.reshape(len(masks), -1).any(axis=1)  # an instance with no pixel left is not an object
    assert len(ours.objects) == int(nonempty.sum()) >= 3
    np.testing.assert_allclose(ours.scores, scores[nonempty], atol=1e-3)
    disagreement = (ours.masks != masks[nonempty]).mean()
    assert disagreement <= 0.005, f"{disagreement:.2%}"
    assert ours.masks.shape[1:] == (70, 90) and ours.boxes.shape == (len(ours.objects), 4)


def test_text_and_exemplars_change_the_result_and_texts_are_cached(predictor):
    image, limits, _ = make_image("gray_uint16", (70, 90), seed=7)
    predictor.set_image(image, contrast_limits=limits)
    nucleus = predictor.segment_concept("nucleus", threshold=0.0)
    other = predictor.segment_concept("mitochondrion", threshold=0.0)
    boxed = predictor.segment_concept("nucleus", exemplar_boxes=[[5, 5, 30, 40]], threshold=0.0)
    box_only = predictor.segment_concept(exemplar_boxes=[[5, 5, 30, 40]], threshold=0.0)
    for changed in (other, boxed, box_only):
        assert not np.allclose(changed.scores[:3], nucleus.scores[:3])
    assert {"nucleus", "mitochondrion", "visual"} <= set(predictor.concept._texts)
    assert nucleus.scores.tolist() == sorted(nucleus.scores.tolist(), reverse=True)
    high = predictor.segment_concept("nucleus", threshold=float(np.median(nucleus.scores)))
    assert 0 < len(high.objects) < len(nucleus.objects)


def test_instances_on_a_tiled_image_are_in_image_coordinates(folder):
    predictor = Predictor.from_pretrained(folder, device="cpu", tiling=TilingSettings(mode="tiles"))
    image, limits, _ = make_image("gray_uint16", (150, 200), seed=8)
    predictor.set_image(image, contrast_limits=limits)
    assert len(predictor.frames()) > 4
    result = predictor.segment_concept("cell", threshold=0.0, mask_threshold=0.9)  # small random blobs
    assert result.masks.shape[1:] == (150, 200)
    rows = [obj.rows.stop for obj in result.objects]
    assert max(rows) > SIZE  # instances from tiles below the first row of tiles, placed where they are
    labels = result.labels()
    assert labels.shape == (150, 200) and labels.max() <= len(result.objects)


def test_bad_concept_prompts_say_what_is_wrong(predictor, folder, tmp_path, tiny_checkpoint):
    image, limits, _ = make_image("gray_uint8", (40, 50))
    predictor.set_image(image)
    for kwargs, message in (({"text": "  "}, "empty"), ({}, "Give a text, exemplar boxes, or both"),
                            ({"exemplar_boxes": [[5, 5, 2, 20]]}, "min <= max"),
                            ({"exemplar_boxes": [[1, 1, 5, 5]], "exemplar_labels": [2]}, "one 0 or 1 per box"),
                            ({"text": "x", "threshold": 2.0}, "must lie in")):
        with pytest.raises(ValueError, match=message):
            predictor.segment_concept(**kwargs)
    with pytest.raises(ValueError, match="Segment concept"):
        predictor.predict(points=[[10, 10]], point_labels=[1])
    sam = Predictor.from_pretrained(tiny_checkpoint, device="cpu")
    sam.set_image(image)
    with pytest.raises(ValueError, match="need a SAM3 concept checkpoint"):
        sam.segment_concept("nucleus")
    random_family_model("sam3", SIZE, seed=2).save_pretrained(tmp_path / "no-tokenizer")
    bare = Predictor.from_pretrained(tmp_path / "no-tokenizer", device="cpu")
    bare.set_image(image)
    for kwargs in ({"text": "nucleus"}, {"exemplar_boxes": [[5, 5, 20, 30]]}):
        with pytest.raises(ValueError, match="no tokenizer"):
            bare.segment_concept(**kwargs)


def test_the_concept_dock_previews_commits_with_scores_and_undoes(make_napari_viewer, qtbot, folder, notifications):
    image, _, _ = make_image("gray_uint16", (70, 90), seed=9)
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, name="cells")
    _, dock = viewer.window.add_plugin_dock_widget("napari-sam", "Segment concept (SAM3)")
    dock.model_picker.native.setCurrentText(str(folder))
    dock.load_model()
    qtbot.waitUntil(lambda: dock.predictor is not None and not dock.busy, timeout=60_000)
    dock.find()  # no text, no exemplars: says what to do, nothing runs
    assert any("Type what to find" in str(n.message) for n in notifications())
    dock.text.value = "nucleus"
    dock.threshold.value = 0.0
    dock.find()
    qtbot.waitUntil(lambda: dock.found is not None and not dock.busy, timeout=60_000)
    count = len(dock.found[2].objects)
    assert count >= 3 and int(dock.preview_layer.data.max()) >= 1
    assert viewer.layers.selection.active is layer  # the preview did not take the selection
    dock.commit()
    labels = dock.labels.value
    assert labels is not None and len(np.unique(labels.data[labels.data > 0])) >= 1
    assert set(labels.features["index"]) == set(np.unique(labels.data[labels.data > 0]))
    assert labels.features["concept_score"].between(0, 1).all()
    assert int(dock.preview_layer.data.max()) == 0
    labels.undo()
    assert int(labels.data.max()) == 0  # one undo step takes the whole commit back


def test_exemplars_drawn_with_alt_are_counter_examples(make_napari_viewer, qtbot, folder):
    image, _, _ = make_image("gray_uint8", (70, 90), seed=10)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    _, dock = viewer.window.add_plugin_dock_widget("napari-sam", "Segment concept (SAM3)")
    dock.draw_exemplars()
    shapes = dock.exemplars_picker.value
    assert viewer.layers.selection.active is shapes and shapes.mode == "add_rectangle"
    shapes.add_rectangles([[10, 10], [30, 40]])
    dock._alt = True
    shapes.add_rectangles([[40, 50], [60, 80]])
    dock._alt = False
    assert shapes.features["positive"].tolist() == [True, False]
    shapes.selected_data = {0}
    dock.flip_selected(shapes)
    from napari_sam.bridge.layer_prompts import read_exemplars

    boxes, labels = read_exemplars(shapes, viewer.layers["cells"], ())
    assert labels.tolist() == [0, 0] and boxes.tolist()[0] == [10, 10, 30, 40]


def test_a_sam3_video_checkpoint_serves_concepts_with_its_detector(tmp_path):
    """facebook/sam3 holds the concept detector and the tracker (model_type sam3_video): the detector is loaded."""
    import transformers

    from napari_sam.core.random_weights import tiny_concept_config, tiny_video_config

    config = transformers.Sam3VideoConfig(detector_config=tiny_concept_config(SIZE).to_dict(),
                                          tracker_config=tiny_video_config("sam3_tracker_video").to_dict())
    transformers.Sam3VideoModel(config).save_pretrained(tmp_path)
    tiny_clip_tokenizer().save_pretrained(tmp_path)
    predictor = Predictor.from_pretrained(tmp_path, device="cpu")
    assert predictor.geometry.family == "sam3" and predictor.concept.tokenizer is not None
    image, limits, _ = make_image("gray_uint16", (70, 90), seed=11)
    predictor.set_image(image, contrast_limits=limits)
    assert len(predictor.segment_concept("nucleus", threshold=0.0).objects) >= 1


def test_several_texts_give_one_result_each(predictor):
    image, limits, _ = make_image("gray_uint16", (70, 90), seed=12)
    predictor.set_image(image, contrast_limits=limits)
    results = predictor.segment_concept(["nucleus", "membrane"], threshold=0.0)
    assert len(results) == 2
    for phrase, result in zip(["nucleus", "membrane"], results):
        np.testing.assert_array_equal(result.scores, predictor.segment_concept(phrase, threshold=0.0).scores)


def test_the_prompt_dock_points_a_concept_checkpoint_to_the_concept_dock(make_napari_viewer, qtbot, folder,
                                                                          notifications):
    viewer = make_napari_viewer()
    image = viewer.add_image(make_image("gray_uint8", (70, 90))[0], name="cells")
    _, dock = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    dock.model_picker.native.setCurrentText(str(folder))
    dock.load_model()
    qtbot.waitUntil(lambda: dock.predictor is not None and not dock.busy, timeout=60_000)
    points = dock.points_picker.value
    points.add([[30, 40]])
    qtbot.waitUntil(lambda: any("Segment concept (SAM3) dock" in str(n.message) for n in notifications()),
                    timeout=10_000)
    assert not any("Prediction failed" in str(n.message) for n in notifications())
    assert image in viewer.layers
