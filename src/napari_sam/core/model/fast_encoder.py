"""A faster attention for SAM's ViT image encoder (SAM, SAM-HQ), on the model's own weights.

transformers' attention adds the decomposed relative-position terms as a (heads, tokens, tokens) bias: for ViT-B's
global layers at 1024² that is 12 x 4096 x 4096 floats (805 MB in float32), built, added and soft-maxed in full.
Here the same function is computed one head and one band of query rows at a time:

- the band's scores are one matrix product (``query * scale`` against all keys), of at most :data:`BLOCK_BYTES`,
  so that the scores stay in the CPU's cache between the steps below;
- the relative-position terms are added to them in place as two broadcasts (``rel_h[query, key row]`` and
  ``rel_w[query, key column]``), never as a (tokens x tokens) bias;
- the softmax and the product with the values follow, written straight into the (B, H, W, heads, d) layout that
  the output projection reads, so no permuted copy of the output is made.

Window layers (14 x 14 tokens per window) take all their windows at once for each head, with the relative-position
terms folded into the query/key dimensions instead (:func:`fold_relative_positions`). On a 2-core AVX-512 CPU a
ViT-B global layer at 1024² takes ~1.5x less time than ``scaled_dot_product_attention`` with each band's bias as
its mask in float32, and ~1.8x less in bfloat16; the whole encoder 1.2x and 1.46x (``benchmarks/encoder.py``).
Unmeasured on GPUs.

:func:`install` swaps this forward into a loaded model's attention modules (that model instance only); modules of
another kind keep transformers' forward.
"""

from __future__ import annotations

import types

import torch

#: Bytes of attention scores computed at once (one head, one band of query rows).
BLOCK_BYTES = 8 << 20
#: Layers of at most this many tokens (SAM's 14 x 14 windows) add the relative-position terms as extra query/key
#: dimensions (:func:`fold_relative_positions`): cheap there, while broadcast adds over 14 columns are slow.
FOLD_TOKENS = 1024
#: The attention classes whose function :func:`attention_forward` reproduces.
SUPPORTED = ("SamVisionAttention", "SamVisionSdpaAttention", "SamHQVisionAttention", "SamHQVisionSdpaAttention")


def attention_forward(self, hidden_states: torch.Tensor, output_attentions=False):
    """SAM's ViT attention on ``hidden_states`` (B, H, W, C) (B is the number of windows in window layers): the
    module's own weights, one head and one band of query rows at a time. Returns ``(output (B, H, W, C), None)`` as
    transformers' SDPA attention does."""
    batch, height, width, _ = hidden_states.shape
    heads, tokens = self.num_attention_heads, height * width
    qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
    query, key, value = qkv.unbind(0)  # (B, heads, N, d), views into qkv
    dim = query.shape[-1]
    scaled, keys = query * self.scale, key
    if self.use_rel_pos:
        grid = query.reshape(batch, heads, height, width, dim)
        rel_pos_h = self.get_rel_pos(height, height, self.rel_pos_h).to(query.dtype)  # (H, H, d)
        rel_pos_w = self.get_rel_pos(width, width, self.rel_pos_w).to(query.dtype)  # (W, W, d)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid, rel_pos_h)  # (B, heads, H, W, key rows)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid, rel_pos_w)  # (B, heads, H, W, key columns)
        if tokens <= FOLD_TOKENS:  # the terms as extra query/key dimensions: one product, no broadcast adds
            scaled, keys = fold_relative_positions(scaled, key, rel_h, rel_w)
        else:
            rel_h, rel_w = rel_h.contiguous(), rel_w.contiguous()
    output = query.new_empty(batch, height, width, heads, value.shape[-1])
    rows = max(1, min(height, BLOCK_BYTES // max(1, batch * width * tokens * query.element_size())))
    add_terms = self.use_rel_pos and tokens > FOLD_TOKENS
    for head in range(heads):
        keys_t, values = keys[:, head].contiguous().transpose(-1, -2), value[:, head]
        for row in range(0, height, rows):
            end = min(height, row + rows)
            scores = torch.matmul(scaled[:, head, row * width: end * width], keys_t)  # (B, band tokens, N)
            if add_terms:
                grid_scores = scores.view(batch, end - row, width, height, width)
                grid_scores.add_(rel_h[:, head, row:end, :, :, None]).add_(rel_w[:, head, row:end, :, None, :])
            weights = scores.softmax(-1)
            output[:, row:end, :, head] = torch.matmul(weights, values).view(batch, end - row, width, -1)
    return self.proj(output.view(batch, height, width, -1)), None


def fold_relative_positions(scaled, key, rel_h, rel_w):
    """Queries (B, heads, N, d + H + W) = [scaled query, rel_h, rel_w] and keys (B, heads, N, d + H + W) =
    [key, one-hot key row, one-hot key column], whose products are the scores with both relative-position terms
    added. ``rel_h`` (B, heads, H, W, H) and ``rel_w`` (B, heads, H, W, W) are indexed [query row, query column, key
    row or column]."""
    batch, heads, height, width, _ = rel_h.shape
    tokens = height * width
    rows = torch.eye(height, dtype=key.dtype, device=key.device).repeat_interleave(width, 0)  # (N, H)
    columns = torch.eye(width, dtype=key.dtype, device=key.device).repeat(height, 1)  # (N, W)
    queries = torch.cat([scaled, rel_h.reshape(batch, heads, tokens, height),
                         rel_w.reshape(batch, heads, tokens, width)], -1)
    keys = torch.cat([key, rows.expand(batch, heads, tokens, height), columns.expand(batch, heads, tokens, width)], -1)
    return queries, keys


def install(model) -> int:
    """Use :func:`attention_forward` in every supported attention module of ``model``'s vision encoder; returns
    how many modules it replaced (0: the model keeps transformers' attention)."""
    count = 0
    for module in model.modules():
        if type(module).__name__ in SUPPORTED and hasattr(module, "get_rel_pos") and hasattr(module, "qkv"):
            module.forward = types.MethodType(attention_forward, module)
            count += 1
    return count
