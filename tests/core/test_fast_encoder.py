"""The banded attention of SAM's ViT encoder against transformers' own, on the same weights."""

import copy

import numpy as np
import pytest
import torch

from napari_sam.core.model import fast_encoder
from napari_sam.testing.random_weights import random_family_model, random_sam, sam_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def relative(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("fold", [1024, 0], ids=["folded", "added"])  # relative positions as dims / in-place adds
@pytest.mark.parametrize("image_size", [224, 256])  # 14 and 16 tokens a side: windows of 14 with and without padding
def test_matches_transformers_encoder_at_vit_b_width(image_size, fold, monkeypatch):
    """ViT-B's blocks (768 wide, 12 heads, windows of 14, global layers 2, 5, 8, 11) on smaller inputs; bands of a
    few rows, so that the global layers are computed in several bands; the relative-position terms folded into the
    query/key dimensions (what window layers and small global layers do) or added in place (large global
    layers)."""
    monkeypatch.setattr(fast_encoder, "BLOCK_BYTES", 1 << 16)
    monkeypatch.setattr(fast_encoder, "FOLD_TOKENS", fold)
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
    from napari_sam.core.model import load_sam

    model.save_pretrained(tmp_path)
    loaded, _, _ = load_sam(str(tmp_path), device="cpu")
    assert all(m.forward.__func__ is fast_encoder.attention_forward for m in loaded.modules()
               if type(m).__name__ in fast_encoder.SUPPORTED)


def test_bfloat16_masks_agree_with_float32_on_tiny_cells():
    """The bundled model through the fast attention: bf16 weights give the fp32 masks on ≥ 99% of the pixels of
    each cell's click, and an image of other cells gives other masks (the encoder is not ignoring the image)."""
    from napari_sam.core.predictor import Predictor
    from napari_sam.demo import synthetic_cells

    image, labels = synthetic_cells(seed=3)
    clicks = [np.argwhere(labels == cell).mean(axis=0).round().astype(int) for cell in np.unique(labels)[1:8]]
    masks = {}
    for dtype in ("float32", "bfloat16"):
        predictor = Predictor.from_pretrained("tiny-cells", device="cpu", dtype=dtype)
        predictor.set_image(image)
        masks[dtype] = [predictor.predict(points=[click]).best_masks()[0] for click in clicks]
    agreement = [float((a == b).mean()) for a, b in zip(masks["float32"], masks["bfloat16"])]
    assert min(agreement) >= 0.99, agreement
    predictor.set_image(synthetic_cells(seed=4)[0])
    assert any((predictor.predict(points=[click]).best_masks()[0] != mask).any()
               for click, mask in zip(clicks, masks["bfloat16"]))
