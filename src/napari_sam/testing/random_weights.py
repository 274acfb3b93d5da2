"""SAM models (and SAM2-family video models) with seeded random weights, for tests and benchmarks that cannot
download a checkpoint.

transformers' default initialisation of ``SamModel`` gives image embeddings of norm ~1e-17, so masks would not
depend on the image at all. :func:`randomize_weights` redraws every parameter from a seeded normal distribution
scaled by its fan-in (norm weights near 1), so that the image visibly drives the masks.
"""

from __future__ import annotations

import math

import torch

from ..core.model import FAMILIES


def sam_config(image_size: int = 1024, patch_size: int = 16, hidden_size: int = 768, depth: int = 12,
               heads: int = 12, output_channels: int = 256, global_attn_indexes=(2, 5, 8, 11),
               window_size: int = 14, decoder_mlp_dim: int = 2048, decoder_heads: int = 8):
    """A ``SamConfig`` with consistent vision, prompt-encoder and mask-decoder sizes.

    The defaults are SAM ViT-B's architecture. The prompt encoder's image and patch size follow the vision
    encoder's, and the positional features are half the output channels, as SAM requires.
    """
    from transformers import SamConfig

    vision = dict(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
                  num_hidden_layers=depth, num_attention_heads=heads, output_channels=output_channels,
                  global_attn_indexes=list(global_attn_indexes), window_size=window_size,
                  num_pos_feats=output_channels // 2)
    prompt = dict(image_size=image_size, patch_size=patch_size, hidden_size=output_channels)
    decoder = dict(hidden_size=output_channels, mlp_dim=decoder_mlp_dim, num_attention_heads=decoder_heads,
                   iou_head_hidden_dim=output_channels)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def tiny_sam_config(image_size: int = 64):
    """A SAM config of about 0.2 M parameters with a ``image_size`` input (8 x 8 or 16 x 16 embedding)."""
    patch_size = 8 if image_size <= 128 else 16
    return sam_config(image_size=image_size, patch_size=patch_size, hidden_size=32, depth=2, heads=2,
                      output_channels=32, global_attn_indexes=(1,), window_size=4, decoder_mlp_dim=64,
                      decoder_heads=2)


def _draw(shape, std: float, mean: float, generator: torch.Generator) -> torch.Tensor:
    return mean + std * torch.randn(shape, generator=generator, dtype=torch.float32)


@torch.no_grad()
def randomize_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw every parameter of ``model`` in place from a seeded normal distribution; returns ``model``.

    Linear and convolution weights get std 1/sqrt(fan_in) (LeCun), biases std 0.02, embedding tables (tokens)
    std 1, normalisation weights 1 + N(0, 0.02), positional tables std 0.02, and SAM's random Fourier
    features std 1 (Meta's default scale).
    """
    generator = torch.Generator().manual_seed(seed)
    drawn = set()
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        weight, bias = own.pop("weight", None), own.pop("bias", None)
        if weight is not None:
            if isinstance(module, torch.nn.Embedding):
                value = _draw(weight.shape, 1.0, 0.0, generator)
            elif isinstance(module, torch.nn.LayerNorm) or weight.dim() == 1:
                value = _draw(weight.shape, 0.02, 1.0, generator)
            elif isinstance(module, torch.nn.ConvTranspose2d):
                value = _draw(weight.shape, 1.0 / math.sqrt(weight.shape[0]), 0.0, generator)
            else:
                value = _draw(weight.shape, 1.0 / math.sqrt(math.prod(weight.shape[1:])), 0.0, generator)
            weight.copy_(value.to(weight.dtype))
            drawn.add(id(weight))
        if bias is not None:
            bias.copy_(_draw(bias.shape, 0.02, 0.0, generator).to(bias.dtype))
            drawn.add(id(bias))
        for name, parameter in own.items():  # positional tables and Fourier features
            if id(parameter) in drawn:
                continue
            std = 1.0 if name == "positional_embedding" else 0.02
            parameter.copy_(_draw(parameter.shape, std, 0.0, generator).to(parameter.dtype))
            drawn.add(id(parameter))
    return model


def tiny_family_config(family: str, image_size: int = 64):
    """A tiny config (about 0.1 M parameters) of one of the image families: ``sam_hq`` (input ``image_size``,
    16-px patches), ``sam2`` (Hiera; ``image_size`` a multiple of 32) or ``sam3_tracker`` (ViT with 14-px patches;
    ``image_size`` a multiple of 14). Their prompt encoders take the vision encoder's sizes."""
    import transformers

    decoder = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32)
    if family == "sam_hq":
        vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
                      patch_size=16, output_channels=32, window_size=2, global_attn_indexes=[1], num_pos_feats=16,
                      mlp_dim=64)
        return transformers.SamHQConfig(
            vision_config=vision, prompt_encoder_config=dict(hidden_size=32, image_size=image_size, patch_size=16,
                                                             mask_input_channels=8),
            mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32,
                                     vit_dim=32))
    if family == "sam2":
        side = image_size // 4
        backbone = dict(model_type="sam2_hiera_det_model", hidden_size=8, embed_dim_per_stage=[8, 16, 32, 64],
                        num_attention_heads_per_stage=[1, 1, 2, 2], blocks_per_stage=[1, 1, 2, 1],
                        window_size_per_stage=[4, 2, 2, 1], global_attention_blocks=[3],
                        window_positional_embedding_background_size=[4, 4], image_size=[image_size, image_size])
        vision = dict(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=32,
                      backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]])
        return transformers.Sam2Config(vision_config=vision, prompt_encoder_config=dict(
            hidden_size=32, image_size=image_size, patch_size=16), mask_decoder_config=decoder)
    if family == "sam3":
        return tiny_concept_config(image_size)
    if family == "sam3_tracker":
        side = 4 * (image_size // 14)
        backbone = dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, image_size=image_size, patch_size=14, window_size=2,
                        global_attn_indexes=[1], pretrain_image_size=image_size)
        vision = dict(model_type="sam3_vision_model", backbone_config=backbone, fpn_hidden_size=32,
                      backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]])
        return transformers.Sam3TrackerConfig(vision_config=vision, prompt_encoder_config=dict(
            hidden_size=32, image_size=image_size, patch_size=14), mask_decoder_config=decoder)
    raise ValueError(f"No tiny config for the family {family!r}.")


def tiny_clip_tokenizer():
    """A byte-level CLIP tokenizer of 515 tokens (every byte, with and without the end-of-word mark, and one merge),
    built offline: enough for tiny SAM3 concept models in tests."""
    import json
    import tempfile
    from pathlib import Path

    from transformers import CLIPTokenizer

    kept = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    codes, extra = kept[:], 0
    for byte in range(256):
        if byte not in kept:
            kept.append(byte)
            codes.append(256 + extra)
            extra += 1
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for code in codes:
            vocab.setdefault(chr(code) + suffix, len(vocab))
    vocab["nu"] = len(vocab)  # tokenizers loses a BPE model without merges when it saves it: one merge
    folder = Path(tempfile.mkdtemp(prefix="tiny-clip-"))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nn u\n")
    return CLIPTokenizer.from_pretrained(folder)


def tiny_concept_config(image_size: int = 56, vocab_size: int = 515):
    """A tiny SAM3 concept (``Sam3Model``) config: ViT of 14-px patches, a 2-layer text encoder, 10 queries."""
    from transformers import Sam3Config

    hidden = 32
    backbone = dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, image_size=image_size, patch_size=14, window_size=2,
                    global_attn_indexes=[1], pretrain_image_size=image_size)
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    small = dict(hidden_size=hidden, num_attention_heads=2, intermediate_size=64)
    return Sam3Config(vision_config=dict(backbone_config=backbone, fpn_hidden_size=hidden), text_config=text,
                      geometry_encoder_config=dict(num_layers=1, **small),
                      detr_encoder_config=dict(num_layers=1, **small),
                      detr_decoder_config=dict(num_layers=2, num_queries=10, **small),
                      mask_decoder_config=dict(hidden_size=hidden, num_upsampling_stages=2, num_attention_heads=2))


def random_family_model(family: str, image_size: int = 64, seed: int = 0):
    """A tiny model of ``family`` (:func:`tiny_family_config`) with :func:`randomize_weights`, in eval mode."""
    _, model_class = FAMILIES[family].classes()
    return randomize_weights(seeded_build(model_class, tiny_family_config(family, image_size), seed), seed).eval()


def seeded_build(model_class, config, seed: int):
    """``model_class(config)`` built with torch's global generator seeded by ``seed`` and restored after: buffers
    drawn at construction (positional Fourier features, for one) do not depend on what ran before."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(config)


def random_sam(config, seed: int = 0):
    """A ``SamModel`` built from ``config`` with :func:`randomize_weights`, in eval mode."""
    from transformers import SamModel

    return randomize_weights(seeded_build(SamModel, config, seed), seed).eval()


def tiny_video_config(kind: str = "sam2_video", image_size: int = 64):
    """A SAM2 (or EdgeTAM) video config of about 1 M parameters with a ``image_size`` square input.

    Hiera with 4 stages of 1-2 blocks (a stage's first block may not be global), FPN of 128 channels. The memory
    attention's cross-attention takes 64-channel memories (hard-coded in transformers), and object pointers are
    split into memory-sized tokens, so the memory has 64 channels and the hidden size must be a larger multiple.
    """
    from transformers import EdgeTamVideoConfig, Sam2VideoConfig

    hidden, feature = 128, image_size // 16
    hiera = dict(model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1,
                 image_size=[image_size, image_size], blocks_per_stage=[1, 1, 2, 1],
                 embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
                 window_size_per_stage=[4, 4, 4, 2], global_attention_blocks=[3],
                 window_positional_embedding_background_size=[4, 4])
    vision = dict(model_type="sam2_vision_model", backbone_config=hiera, backbone_channel_list=[64, 32, 16, 8],
                  backbone_feature_sizes=[[4 * feature] * 2, [2 * feature] * 2, [feature] * 2], fpn_hidden_size=hidden)
    common = dict(
        vision_config=vision, image_size=image_size, num_maskmem=3, max_object_pointers_in_encoder=4,
        prompt_encoder_config=dict(hidden_size=hidden, image_size=image_size, patch_size=16, mask_input_channels=8),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
        memory_attention_rope_feat_sizes=[feature, feature], memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64, mask_downsampler_embed_dim=hidden, memory_fuser_num_layers=1,
        memory_fuser_embed_dim=hidden, memory_fuser_intermediate_dim=64)
    if kind == "sam3_tracker_video":
        from transformers import Sam3TrackerVideoConfig

        size = 56  # 14-px patches
        backbone = dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, image_size=size, patch_size=14, window_size=2, global_attn_indexes=[1],
                        pretrain_image_size=size)
        return Sam3TrackerVideoConfig(
            vision_config=dict(model_type="sam3_vision_model", backbone_config=backbone, fpn_hidden_size=hidden),
            image_size=size, num_maskmem=3, max_object_pointers_in_encoder=4,
            prompt_encoder_config=dict(hidden_size=hidden, patch_size=14),
            mask_decoder_config=dict(hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=hidden),
            memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
            memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[size // 14] * 2,
            memory_encoder_hidden_size=hidden, memory_encoder_output_channels=64, mask_downsampler_embed_dim=hidden,
            memory_fuser_embed_dim=hidden, memory_fuser_intermediate_dim=64, memory_fuser_num_layers=1)
    if kind == "edgetam_video":
        return EdgeTamVideoConfig(**common, memory_attention_mlp_hidden_size=64, memory_attention_rope_k_sizes=[2, 2],
                                  perceiver_resampler_num_latents=4, perceiver_resampler_num_latents_2d=4,
                                  perceiver_resampler_mlp_intermediate_size=64, perceiver_resampler_num_layers=1)
    return Sam2VideoConfig(**common, memory_attention_feed_forward_hidden_size=64)


def random_video_model(kind: str = "sam2_video", seed: int = 1, object_bias: float = 2.0):
    """A tiny video model with :func:`randomize_weights`, in eval mode.

    A random object-score head says "present" or "absent" by chance (logits near 0) and an absent object's mask is
    wiped, so ``object_bias`` is added to its output: positive keeps the object present, negative makes it absent.
    """
    import transformers

    model_class = getattr(transformers, {"edgetam_video": "EdgeTamVideoModel",
                                         "sam3_tracker_video": "Sam3TrackerVideoModel"}.get(kind, "Sam2VideoModel"))
    model = randomize_weights(seeded_build(model_class, tiny_video_config(kind), seed), seed).eval()
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(object_bias)
    return model
