"""A faster attention for SAM's ViT image encoder (SAM, SAM-HQ), on the model's own weights.

transformers' attention adds the decomposed relative-position terms as a (heads, tokens, tokens) bias: for ViT-B's
global layers at 1024² that is 12 x 4096 x 4096 floats (805 MB in float32), built, added and soft-maxed in full.
Here the same function is computed a band of query rows at a time: each band's bias (rel_h[q, key row] +
rel_w[q, key column]) is built for that band only and handed to ``scaled_dot_product_attention`` with the band's
queries, so no (tokens x tokens) tensor of the whole layer ever exists. Window layers (14 x 14 tokens) fit in one
band.

:func:`install` swaps this forward into a loaded model's attention modules (that model instance only); modules of
another kind keep transformers' forward.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

#: Bytes of attention bias built at once (per band of query rows).
BIAS_BYTES = 96 << 20
#: The attention classes whose function :func:`attention_forward` reproduces.
SUPPORTED = ("SamVisionAttention", "SamVisionSdpaAttention", "SamHQVisionAttention", "SamHQVisionSdpaAttention")


def attention_forward(self, hidden_states: torch.Tensor, output_attentions=False):
    """SAM's ViT attention on ``hidden_states`` (B, H, W, C): the module's own weights, relative positions added
    band by band. Returns ``(output (B, H, W, C), None)`` as transformers' SDPA attention does."""
    batch, height, width, _ = hidden_states.shape
    heads, tokens = self.num_attention_heads, height * width
    qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
    query, key, value = qkv.unbind(0)  # (B, heads, N, d)
    dim = query.shape[-1]
    if not self.use_rel_pos:
        output = F.scaled_dot_product_attention(query, key, value, scale=self.scale)
    else:
        rel_pos_h = self.get_rel_pos(height, height, self.rel_pos_h).to(query.dtype)  # (H, H, d)
        rel_pos_w = self.get_rel_pos(width, width, self.rel_pos_w).to(query.dtype)  # (W, W, d)
        grid = query.reshape(batch, heads, height, width, dim)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid, rel_pos_h)  # (B, heads, H, W, H)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid, rel_pos_w)  # (B, heads, H, W, W)
        per_row = batch * heads * width * tokens * query.element_size()
        rows = max(1, min(height, BIAS_BYTES // max(1, per_row)))
        output = query.new_empty(batch, heads, tokens, value.shape[-1])
        for row in range(0, height, rows):
            end = min(height, row + rows)
            bias = (rel_h[:, :, row:end, :, :, None] + rel_w[:, :, row:end, :, None, :]).reshape(
                batch, heads, (end - row) * width, tokens)
            band = grid[:, :, row:end].reshape(batch, heads, (end - row) * width, dim)
            output[:, :, row * width: end * width] = F.scaled_dot_product_attention(band, key, value, attn_mask=bias,
                                                                                    scale=self.scale)
    output = output.reshape(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    return self.proj(output), None


def install(model) -> int:
    """Use :func:`attention_forward` in every supported attention module of ``model``'s vision encoder; returns
    how many modules it replaced (0: the model keeps transformers' attention)."""
    count = 0
    for module in model.modules():
        if type(module).__name__ in SUPPORTED and hasattr(module, "get_rel_pos") and hasattr(module, "qkv"):
            module.forward = types.MethodType(attention_forward, module)
            count += 1
    return count
