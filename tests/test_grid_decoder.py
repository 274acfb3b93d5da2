"""GridDecoder computes the same function as transformers' SamModel mask decoder for one-point prompts."""

import pytest
import torch

from napari_sam.core.grid_decoder import GridDecoder
from napari_sam.core.random_weights import random_sam, sam_config, tiny_sam_config


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
