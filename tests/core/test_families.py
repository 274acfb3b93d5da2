"""SAM-HQ, SAM2.1 and SAM3's tracker through the same Predictor, against transformers' own model calls.

Each family's tiny checkpoint has seeded random weights, saved and reloaded. SAM-HQ's reference is transformers'
documented path (SamProcessor, PIL backend, + SamHQModel + post_process_masks). The SAM2 family's processors need
torchvision, so its reference builds the pixel values as those processors document them (uint8 RGB stretched to
the square input, bilinear with antialiasing; rescaled and normalised), scales prompts by the input size over the
image's, calls the model's forward on the pixels and upsamples the low-resolution masks straight to the image.
Bounds as for SAM: at most 0.5% of mask pixels disagree, scores within 1e-3.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import SamHQModel

from napari_sam import Predictor, segment_everything
from napari_sam.core.errors import ModelLoadError
from napari_sam.core.image import display_rgb, model_input
from napari_sam.core.model import load_sam
from napari_sam.core.settings import TilingSettings

from helpers import FAMILY_SIZES, Reference, assert_cases_equivalent, make_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WHOLE = TilingSettings(mode="whole")
KINDS = ["rgb_uint8", "gray_uint8", "gray_uint16", "float_nan"]


class SquareReference:
    """The SAM2 family's documented path, written here from its processor's steps."""

    def __init__(self, folder, family):
        from napari_sam.core.model import FAMILIES

        self.model = FAMILIES[family].classes()[1].from_pretrained(folder).eval()
        self.side = self.model.config.prompt_encoder_config.image_size
        self.mean = torch.tensor((0.5,) * 3 if family == "sam3_tracker" else (0.485, 0.456, 0.406)).view(1, 3, 1, 1)
        self.std = torch.tensor((0.5,) * 3 if family == "sam3_tracker" else (0.229, 0.224, 0.225)).view(1, 3, 1, 1)

    def pixels(self, image_uint8):
        rgb = torch.from_numpy(np.ascontiguousarray(image_uint8[..., :3])).permute(2, 0, 1)[None]
        resized = F.interpolate(rgb, size=(self.side, self.side), mode="bilinear", align_corners=False,
                                antialias=True)  # uint8 in, uint8 out, as the processor resizes
        return (resized.float() - 255 * self.mean) / (255 * self.std)

    @torch.no_grad()
    def __call__(self, image, points=None, labels=None, boxes=None, mask_input=None):
        height, width = image.shape[:2]
        scale = torch.tensor([self.side / width, self.side / height])
        inputs = {}
        if points is not None:
            inputs["input_points"] = (torch.tensor([[c, r] for r, c in points]) * scale)[None, None].float()
            inputs["input_labels"] = torch.tensor(labels)[None, None]
        if boxes is not None:
            xyxy = torch.tensor([[c0, r0, c1, r1] for r0, c0, r1, c1 in boxes]) * scale.repeat(2)
            inputs["input_boxes"] = xyxy[None].float()
            if points is not None:
                inputs["input_points"] = inputs["input_points"].expand(1, len(boxes), -1, -1)
                inputs["input_labels"] = inputs["input_labels"].expand(1, len(boxes), -1)
        out = self.model(pixel_values=self.pixels(image), input_masks=mask_input, multimask_output=True, **inputs)
        masks = F.interpolate(out.pred_masks[0].float(), size=(height, width), mode="bilinear",
                              align_corners=False) > 0
        return masks.numpy(), out.iou_scores[0].numpy(), out.pred_masks[0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(37, 91), (300, 200)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("family", list(FAMILY_SIZES))
def test_matches_transformers(family, shape, kind, family_checkpoints):
    predictor = Predictor.from_pretrained(family_checkpoints[family], device="cpu", tiling=WHOLE)
    assert predictor.geometry.family == family
    reference = (Reference(family_checkpoints[family], FAMILY_SIZES[family], SamHQModel) if family == "sam_hq"
                 else SquareReference(family_checkpoints[family], family))
    image, limits, reference_image = make_image(kind, shape)
    predictor.set_image(image, contrast_limits=limits)
    assert_cases_equivalent(predictor, reference, reference_image, shape)


@pytest.mark.parametrize("family", list(FAMILY_SIZES))
def test_masks_follow_the_image_and_segment_everything_runs(family, family_checkpoints):
    predictor = Predictor.from_pretrained(family_checkpoints[family], device="cpu", tiling=WHOLE)
    first, _, _ = make_image("gray_uint16", (120, 160), seed=1)
    other, _, _ = make_image("gray_uint16", (120, 160), seed=2)
    predictor.set_image(first)
    a = predictor.predict(points=[[60, 80]], point_labels=[1]).masks
    predictor.set_image(other)
    b = predictor.predict(points=[[60, 80]], point_labels=[1]).masks
    assert (a != b).mean() > 0.01
    result = segment_everything(predictor, first, points_per_side=6, pred_iou_thresh=0, stability_score_thresh=0)
    assert result.labels.shape == (120, 160) and len(result.objects) >= 1


def test_square_preprocessing_follows_the_documented_steps():
    """Ours (Pillow-exact two-pass resize, rescale, normalise) against torch's antialiased bilinear on uint8 and the
    processor's fused normalisation: within one 8-bit level."""
    from napari_sam.core.model import model_geometry
    from napari_sam.testing.random_weights import tiny_family_config

    geometry = model_geometry(tiny_family_config("sam2", 64), "sam2")
    image, _, reference_image = make_image("rgb_uint8", (90, 130))
    ours = model_input(display_rgb(image, None, True), geometry, resized=geometry.input_size(None))
    reference = SquareReference.__new__(SquareReference)
    reference.side = 64
    reference.mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    reference.std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    expected = reference.pixels(reference_image)
    level = (1 / 255) / min(0.229, 0.224, 0.225)
    assert ours.shape == expected.shape == (1, 3, 64, 64)
    assert float((ours - expected).abs().max()) <= level * 1.01


def test_unsupported_checkpoints_say_what_to_do(tmp_path):
    for model_type, expected in (("dinov2", "napari-sam runs the SAM families"),
                                 ("sam3_lite_text", "napari-sam runs the SAM families")):
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        with pytest.raises(ModelLoadError, match=expected):
            load_sam(str(folder), device="cpu")


def test_the_sam2_family_gets_its_own_generators_defaults(family_checkpoints):
    predictor = Predictor.from_pretrained(family_checkpoints["sam2"], device="cpu")
    assert predictor.recommended.everything.pred_iou_thresh == 0.8  # SAM2's generator; SAM-1's is 0.88
    assert predictor.recommended.source == "SAM2.1's generator"
    assert Predictor.from_pretrained(family_checkpoints["sam_hq"], device="cpu").recommended.source == "defaults"


def test_the_family_grid_decodes_each_point_as_predict_does(family_checkpoints):
    predictor = Predictor.from_pretrained(family_checkpoints["sam2"], device="cpu", tiling=WHOLE)
    image, limits, _ = make_image("gray_uint16", (80, 100), seed=4)
    predictor.set_image(image, contrast_limits=limits)
    points = np.array([[10.0, 20.0], [40.0, 50.0], [70.0, 90.0]])
    logits, scores, kept = predictor.point_grid_logits(points)
    assert kept.tolist() == [0, 1, 2] and logits.shape == (3, 3, 16, 16)
    for index, point in enumerate(points):
        single = predictor.predict(points=[point], point_labels=[1])
        np.testing.assert_allclose(logits[index].numpy(), single.logits[0], atol=1e-4)
        np.testing.assert_allclose(scores[index].numpy(), single.scores[0], atol=1e-5)
    _, _, filtered = predictor.point_grid_logits(points, min_score=float(scores.max(dim=1).values.median()))
    assert 1 <= len(filtered) < 3


def test_gated_and_edgetam_checkpoints_say_what_to_do(tmp_path):
    from napari_sam.core.model.loading import load_error

    class GatedRepoError(Exception):
        pass

    message = str(load_error("facebook/sam3", GatedRepoError("401 Client Error")))
    assert "gated" in message and "hf auth login" in message and "licence" in message
    folder = tmp_path / "edgetam"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "edgetam"}))
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ModelLoadError, match="timm"):
            load_sam(str(folder), device="cpu")


def test_a_sam2_video_checkpoint_serves_prompt_mode_with_its_image_model(tmp_path):
    from napari_sam.testing.random_weights import random_video_model

    random_video_model().save_pretrained(tmp_path / "video")
    predictor = Predictor.from_pretrained(tmp_path / "video", device="cpu", tiling=WHOLE)
    assert predictor.geometry.family == "sam2" and predictor.geometry.square
    image, limits, _ = make_image("gray_uint16", (70, 90), seed=5)
    predictor.set_image(image, contrast_limits=limits)
    assert predictor.predict(points=[[30, 40]], point_labels=[1]).masks.shape == (1, 3, 70, 90)


@pytest.mark.parametrize("family", list(FAMILY_SIZES))
def test_frames_encoded_in_one_batch_equal_frames_encoded_one_by_one(family, family_checkpoints, monkeypatch):
    """A batch of tiles gives each tile the embedding and the extra features it gets alone."""
    from napari_sam.core.embeddings import frame_embeddings

    monkeypatch.setattr(frame_embeddings, "encoder_batch", lambda device, free, per_frame: 16)  # as on a GPU
    tiles = TilingSettings(mode="tiles", tile_size=FAMILY_SIZES[family])
    image = make_image("gray_uint16", (150, 170), seed=4)[0]
    alone, batched = (Predictor.from_pretrained(family_checkpoints[family], device="cpu", tiling=tiles)
                      for _ in range(2))
    runs = []
    batched.model.vision_encoder.register_forward_hook(lambda *args: runs.append(1))
    alone.set_image(image)
    batched.set_image(image)
    frames = batched.frames()
    assert len(frames) >= 4
    assert batched.embed_frames(frames) == len(frames) and len(runs) == 1  # one batch
    assert batched.embed_frames(frames) == 0  # then cached
    for frame in frames:
        (one, ran), (many, again) = alone.frame_embedding(frame), batched.frame_embedding(frame)
        assert ran and not again
        for x, y in zip((one.embedding, *one.extras), (many.embedding, *many.extras), strict=True):
            assert x.shape == y.shape and len(y) == 1
            assert (x - y).abs().max() <= 1e-4 * x.abs().max()


def test_a_video_only_checkpoint_is_refused_for_prompts_naming_propagate(tmp_path):
    from napari_sam.testing.random_weights import random_video_model

    random_video_model("sam3_tracker_video").save_pretrained(tmp_path / "tracker-video")
    with pytest.raises(ModelLoadError, match="video checkpoint.*Propagate"):
        load_sam(str(tmp_path / "tracker-video"), device="cpu")
