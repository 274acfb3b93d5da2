"""The banded attention of SAM's ViT encoder against transformers' own, on the same weights."""

import copy

import pytest
import torch

from napari_sam.core import fast_encoder
from napari_sam.core.random_weights import random_family_model, random_sam, sam_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def relative(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("image_size", [224, 256])  # 14 and 16 tokens a side: windows of 14 with and without padding
def test_matches_transformers_encoder_at_vit_b_width(image_size, monkeypatch):
    """ViT-B's blocks (768 wide, 12 heads, windows of 14, global layers 2, 5, 8, 11) on smaller inputs; bands of a
    few rows, so that the global layers are computed in several bands."""
    monkeypatch.setattr(fast_encoder, "BIAS_BYTES", 1 << 20)
    model = random_sam(sam_config(image_size=image_size), seed=4)
    fast = copy.deepcopy(model)
    assert fast_encoder.install(fast) == 12
    pixels = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, ours = model.get_image_embeddings(pixels), fast.get_image_embeddings(pixels)
        assert relative(ours, expected) < 1e-4
        assert relative(fast.to(torch.bfloat16).get_image_embeddings(pixels.bfloat16()), expected) < 0.02


def test_sam_hq_and_loading_use_it(tmp_path):
    model = random_family_model("sam_hq", 64, seed=5)
    fast = copy.deepcopy(model)
    assert fast_encoder.install(fast) == 2
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        (a, inter_a), (b, inter_b) = model.get_image_embeddings(pixels), fast.get_image_embeddings(pixels)
    assert relative(b, a) < 1e-5 and relative(inter_b[0], inter_a[0]) < 1e-5
    from napari_sam.core.model_loading import load_sam

    model.save_pretrained(tmp_path)
    loaded, _, _ = load_sam(str(tmp_path), device="cpu")
    assert all(m.forward.__func__ is fast_encoder.attention_forward for m in loaded.modules()
               if type(m).__name__ in fast_encoder.SUPPORTED)
