"""GridDecoder computes the same function as transformers' SamModel mask decoder for one-point prompts."""

import pytest
import torch

from napari_sam.core.decoding import GridDecoder
from napari_sam.testing.random_weights import random_sam, sam_config, tiny_sam_config


def _model(config, seed=3):
    """A random SAM whose biases are large too, so that a bias left out or added twice shows."""
    model = random_sam(config, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    return model


def _reference(model, embedding, points_xy):
    labels = torch.ones((len(points_xy), 1, 1), dtype=torch.long)
    with torch.inference_mode():
        output = model(image_embeddings=embedding.expand(len(points_xy), -1, -1, -1),
                       input_points=points_xy[:, None, None], input_labels=labels, multimask_output=True)
    return output.pred_masks[:, 0].float(), output.iou_scores[:, 0].float()


def _inputs(config, seed=0, count=5):
    generator = torch.Generator().manual_seed(seed)
    side = config.prompt_encoder_config.image_embedding_size
    channels = config.mask_decoder_config.hidden_size
    embedding = torch.randn((1, channels, side, side), generator=generator)
    points = torch.rand((count, 2), generator=generator) * config.prompt_encoder_config.image_size
    return embedding, points


@pytest.mark.parametrize("config", [tiny_sam_config(64), tiny_sam_config(256),
                                    sam_config(image_size=128, hidden_size=32, depth=1, heads=2,
                                               global_attn_indexes=(0,), decoder_heads=4)],
                         ids=["tiny-64", "tiny-256", "vit-b-decoder-128"])
def test_same_logits_and_scores_as_the_model(config):
    model = _model(config)
    embedding, points = _inputs(config)
    decoder = GridDecoder(model)
    logits, scores, kept = decoder.decode(decoder.prepare(embedding), points)
    ref_logits, ref_scores = _reference(model, embedding, points)
    assert kept.tolist() == list(range(len(points)))
    assert logits.shape == ref_logits.shape == (len(points), 3, 4 * embedding.shape[-1], 4 * embedding.shape[-1])
    scale = ref_logits.abs().mean()
    assert (logits - ref_logits).abs().max() <= 1e-4 * max(1.0, scale)
    assert torch.allclose(scores, ref_scores, atol=1e-5)
    # the outputs depend on the image and on the point (the random weights are not degenerate)
    other_logits, _, _ = decoder.decode(decoder.prepare(torch.roll(embedding, 3, dims=-1)), points)
    assert (other_logits - logits).abs().mean() > 0.05 * scale
    assert (logits[0] - logits[1]).abs().mean() > 0.01 * scale


def test_min_score_skips_only_prompts_without_a_good_candidate():
    config = tiny_sam_config(64)
    model = _model(config)
    embedding, points = _inputs(config, count=12)
    decoder = GridDecoder(model)
    prepared = decoder.prepare(embedding)
    logits, scores, _ = decoder.decode(prepared, points)
    threshold = float(scores.max(dim=1).values.median())
    kept_logits, kept_scores, kept = decoder.decode(prepared, points, min_score=threshold)
    expected = torch.nonzero((scores > threshold).any(dim=1)).flatten()
    assert 0 < len(kept) < len(points)
    assert kept.tolist() == expected.tolist()
    assert torch.equal(kept_scores, scores)
    assert torch.allclose(kept_logits, logits[kept], atol=1e-5)
    none_logits, _, none_kept = decoder.decode(prepared, points, min_score=2.0)  # predicted IoUs are below 2
    assert none_kept.numel() == 0 and none_logits.shape == (0, 3, *logits.shape[-2:])


def test_bfloat16_weights_agree_with_the_float32_model():
    config = tiny_sam_config(256)
    model = _model(config)
    embedding, points = _inputs(config, count=8)
    ref_logits, ref_scores = _reference(model, embedding, points)
    decoder = GridDecoder(model.to(torch.bfloat16))
    logits, scores, _ = decoder.decode(decoder.prepare(embedding.to(torch.bfloat16)), points)
    assert logits.dtype == torch.float32
    assert ((logits > 0) == (ref_logits > 0)).float().mean() > 0.97
    assert (scores - ref_scores).abs().max() < 0.05


def _prompts(config, kind, seed=1):
    """transformers' inputs for ``kind`` prompts in the model's input frame, and the number of objects."""
    generator = torch.Generator().manual_seed(seed)
    size = config.prompt_encoder_config.image_size
    side = config.prompt_encoder_config.image_embedding_size * 4
    points = (torch.rand((1, 1, 3, 2), generator=generator) * size).double()  # float64, as decoder_inputs gives
    labels = torch.tensor([[[1, 0, 1]]])
    corner = torch.rand((3, 2), generator=generator) * size / 2
    boxes = torch.cat([corner, corner + size / 3], dim=1)[:, None].double()  # (3, 1, 4) x0 y0 x1 y1
    mask = torch.randn((1, 1, side, side), generator=generator) * 4
    return {"points": ({"input_points": points, "input_labels": labels}, 1),
            "box": ({"input_boxes": boxes[:1]}, 1),
            "points and box": ({"input_points": points, "input_labels": labels, "input_boxes": boxes[:1]}, 1),
            "three boxes": ({"input_boxes": boxes}, 3),
            "points and mask": ({"input_points": points, "input_labels": labels, "input_masks": mask}, 1),
            "box and mask": ({"input_boxes": boxes[:1], "input_masks": mask}, 1)}[kind]


@pytest.mark.parametrize("multimask", [True, False], ids=["three", "single"])
@pytest.mark.parametrize("kind", ["points", "box", "points and box", "three boxes", "points and mask",
                                  "box and mask"])
@pytest.mark.parametrize("config", [tiny_sam_config(64),
                                    sam_config(image_size=128, hidden_size=32, depth=1, heads=2,
                                               global_attn_indexes=(0,), decoder_heads=4)],
                         ids=["tiny-64", "vit-b-decoder-128"])
def test_any_prompt_decodes_as_the_model_does(config, kind, multimask):
    """Points of both signs, boxes, several objects, mask prompts, one or three candidates: the same logits and
    predicted IoUs as the model's decoder, and the frame decoder picks it (one object with a mask, or none)."""
    from napari_sam.core.decoding import FrameDecoder
    from napari_sam.core.embeddings import CachedEmbedding
    from napari_sam.core.model import FAMILIES, model_geometry

    model = _model(config)
    embedding, _ = _inputs(config)
    inputs, n_objects = _prompts(config, kind)
    with torch.inference_mode():
        output = model(image_embeddings=embedding.expand(n_objects, -1, -1, -1), multimask_output=multimask,
                       **{k: v.expand(n_objects, *v.shape[1:]) for k, v in inputs.items()})
    ref_logits, ref_scores = output.pred_masks[:, 0].float(), output.iou_scores[:, 0].float()
    decoder = FrameDecoder(model, FAMILIES["sam"], model_geometry(config))
    current = CachedEmbedding(embedding=embedding, original_size=(8, 8), resized_size=(8, 8), extras=())
    decoder.prompts(current, 1, {"input_points": torch.zeros((1, 1, 1, 2)), "input_labels": torch.ones((1, 1, 1))},
                    True)  # an earlier prompt: its prepared image is reused, not its mask prompt
    expanded = {k: v.expand(n_objects, *v.shape[1:]) for k, v in inputs.items()}
    logits, scores = decoder.prompts(current, n_objects, expanded, multimask)
    candidates = 3 if multimask else 1
    assert logits.shape == ref_logits.shape == (n_objects, candidates, *ref_logits.shape[-2:])
    scale = ref_logits.abs().mean()
    assert (logits - ref_logits).abs().max() <= 1e-4 * max(1.0, scale)
    assert torch.allclose(scores, ref_scores, atol=1e-5)
    if "mask" in kind:  # the mask prompt matters
        unmasked, _ = decoder.prompts(current, 1, {k: v for k, v in inputs.items() if k != "input_masks"}, multimask)
        assert (unmasked - logits).abs().mean() > 0.01 * scale
