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

from napari_sam import Predictor, segment_concept
from napari_sam.core.settings import TilingSettings
from napari_sam.testing.random_weights import random_family_model, tiny_clip_tokenizer

from helpers import SAM3_SIZE, make_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def reference(model, tokenizer, image_uint8, text, boxes=None, labels=None, threshold=0.0):
    height, width = image_uint8.shape[:2]
    rgb = torch.from_numpy(np.ascontiguousarray(image_uint8[..., :3])).permute(2, 0, 1)[None]
    pixels = F.interpolate(rgb, size=(SAM3_SIZE, SAM3_SIZE), mode="bilinear", align_corners=False, antialias=True)
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
def test_matches_sam3s_documented_path(kind, with_boxes, concept_predictor):
    image, limits, reference_image = make_image(kind, (70, 90), seed=6)
    concept_predictor.set_image(image, contrast_limits=limits)
    boxes, labels = ([[10.0, 12.0, 40.0, 50.0], [45.0, 60.0, 65.0, 85.0]], [1, 0]) if with_boxes else (None, None)
    ours = segment_concept(concept_predictor, "nucleus", exemplar_boxes=boxes, exemplar_labels=labels, threshold=0.0)
    masks, scores = reference(concept_predictor.model, concept_predictor.concept.tokenizer, reference_image, "nucleus",
                              boxes, labels)
    nonempty = masks.reshape(len(masks), -1).any(axis=1)  # an instance with no pixel left is not an object
    assert len(ours.objects) == int(nonempty.sum()) >= 3
    np.testing.assert_allclose(ours.scores, scores[nonempty], atol=1e-3)
    disagreement = (ours.masks != masks[nonempty]).mean()
    assert disagreement <= 0.005, f"{disagreement:.2%}"
    assert ours.masks.shape[1:] == (70, 90) and ours.boxes.shape == (len(ours.objects), 4)


def test_text_and_exemplars_change_the_result_and_texts_are_cached(concept_predictor):
    image, limits, _ = make_image("gray_uint16", (70, 90), seed=7)
    concept_predictor.set_image(image, contrast_limits=limits)
    nucleus = segment_concept(concept_predictor, "nucleus", threshold=0.0)
    other = segment_concept(concept_predictor, "mitochondrion", threshold=0.0)
    boxed = segment_concept(concept_predictor, "nucleus", exemplar_boxes=[[5, 5, 30, 40]], threshold=0.0)
    box_only = segment_concept(concept_predictor, exemplar_boxes=[[5, 5, 30, 40]], threshold=0.0)
    for changed in (other, boxed, box_only):
        assert not np.allclose(changed.scores[:3], nucleus.scores[:3])
    assert {"nucleus", "mitochondrion", "visual"} <= set(concept_predictor.concept._texts)
    assert nucleus.scores.tolist() == sorted(nucleus.scores.tolist(), reverse=True)
    high = segment_concept(concept_predictor, "nucleus", threshold=float(np.median(nucleus.scores)))
    assert 0 < len(high.objects) < len(nucleus.objects)


def test_instances_on_a_tiled_image_are_in_image_coordinates(concept_checkpoint):
    predictor = Predictor.from_pretrained(concept_checkpoint, device="cpu", tiling=TilingSettings(mode="tiles"))
    image, limits, _ = make_image("gray_uint16", (150, 200), seed=8)
    predictor.set_image(image, contrast_limits=limits)
    assert len(predictor.frames()) > 4
    result = segment_concept(predictor, "cell", threshold=0.0, mask_threshold=0.9)  # small random blobs
    assert result.masks.shape[1:] == (150, 200)
    rows = [obj.rows.stop for obj in result.objects]
    assert max(rows) > SAM3_SIZE  # instances from tiles below the first row of tiles, placed where they are
    labels = result.labels()
    assert labels.shape == (150, 200) and labels.max() <= len(result.objects)


def test_bad_concept_prompts_say_what_is_wrong(concept_predictor, concept_checkpoint, tmp_path, tiny_checkpoint):
    image, limits, _ = make_image("gray_uint8", (40, 50))
    concept_predictor.set_image(image)
    for kwargs, message in (({"text": "  "}, "empty"), ({}, "Give a text, exemplar boxes, or both"),
                            ({"exemplar_boxes": [[5, 5, 2, 20]]}, "min <= max"),
                            ({"exemplar_boxes": [[1, 1, 5, 5]], "exemplar_labels": [2]}, "one 0 or 1 per box"),
                            ({"text": "x", "threshold": 2.0}, "must lie in")):
        with pytest.raises(ValueError, match=message):
            segment_concept(concept_predictor, **kwargs)
    with pytest.raises(ValueError, match="Segment concept"):
        concept_predictor.predict(points=[[10, 10]], point_labels=[1])
    sam = Predictor.from_pretrained(tiny_checkpoint, device="cpu")
    sam.set_image(image)
    with pytest.raises(ValueError, match="need a SAM3 concept checkpoint"):
        segment_concept(sam, "nucleus")
    random_family_model("sam3", SAM3_SIZE, seed=2).save_pretrained(tmp_path / "no-tokenizer")
    bare = Predictor.from_pretrained(tmp_path / "no-tokenizer", device="cpu")
    bare.set_image(image)
    for kwargs in ({"text": "nucleus"}, {"exemplar_boxes": [[5, 5, 20, 30]]}):
        with pytest.raises(ValueError, match="no tokenizer"):
            segment_concept(bare, **kwargs)


def test_a_sam3_video_checkpoint_serves_concepts_with_its_detector(tmp_path):
    """facebook/sam3 holds the concept detector and the tracker (model_type sam3_video): the detector is loaded."""
    import transformers

    from napari_sam.testing.random_weights import tiny_concept_config, tiny_video_config

    config = transformers.Sam3VideoConfig(detector_config=tiny_concept_config(SAM3_SIZE).to_dict(),
                                          tracker_config=tiny_video_config("sam3_tracker_video").to_dict())
    transformers.Sam3VideoModel(config).save_pretrained(tmp_path)
    tiny_clip_tokenizer().save_pretrained(tmp_path)
    predictor = Predictor.from_pretrained(tmp_path, device="cpu")
    assert predictor.geometry.family == "sam3" and predictor.concept.tokenizer is not None
    image, limits, _ = make_image("gray_uint16", (70, 90), seed=11)
    predictor.set_image(image, contrast_limits=limits)
    assert len(segment_concept(predictor, "nucleus", threshold=0.0).objects) >= 1


def test_several_texts_give_one_result_each(concept_predictor):
    image, limits, _ = make_image("gray_uint16", (70, 90), seed=12)
    concept_predictor.set_image(image, contrast_limits=limits)
    results = segment_concept(concept_predictor, ["nucleus", "membrane"], threshold=0.0)
    assert len(results) == 2
    for phrase, result in zip(["nucleus", "membrane"], results):
        np.testing.assert_array_equal(result.scores, segment_concept(concept_predictor, phrase, threshold=0.0).scores)

