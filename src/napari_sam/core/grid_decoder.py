"""SAM's mask decoder for many one-point prompts on one image, sharing the work that does not depend on the prompt.

Segment everything decodes a grid of ~1000 one-point prompts on the same image embedding. transformers'
``SamMaskDecoder`` treats each prompt on its own: it copies the image embedding and its positional encoding per
prompt and projects them again, and runs the two-way transformer and the upscaling in channels-first layout with
permutes in between. On a CPU most of that time is memory traffic. :class:`GridDecoder` computes the same function
(the same weights, the same operations up to floating-point rounding):

- the image side of the first two-way block (its keys, values and image queries) and the positional encoding's
  projections of the later blocks are computed once per image (:meth:`GridDecoder.prepare`);
- the image tokens' update from the tokens is computed as attention weights times the per-head out-projected
  token values, a (tokens x heads)-rank product instead of a projection of every image token;
- the later projections of the image tokens are fused into one matrix product each;
- the upscaling works channels-last: each transposed convolution (kernel 2, stride 2) is one matrix product, the
  layer norm needs no permute, and the mask logits are assembled once at the end;
- prompts whose candidates all score below ``min_score`` (the caller's predicted-IoU filter) skip the upscaling.

Matrix products run in the model's dtype (bf16 on CPUs with AMX is much faster); normalisation, softmax and GELU
run in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PreparedImage:
    """The prompt-independent part of the decoder for one image embedding (all (N, ·) rows in row-major order
    over the e x e embedding grid, N = e²).

    Attributes:
        keys: (N, C) float32, the image embedding plus the no-mask embedding (the first block's image tokens).
        first_kv: (N, 2 * D) the first block's token-to-image keys and values (D = the attention's inner size).
        first_q: (N, D) the first block's image-to-token queries.
        later_bias: per later block, (N, 3 * D): positional-encoding key projection + key bias, value bias,
            positional-encoding query projection + query bias (added to the fused product of the image tokens).
        final_bias: (N, 2 * D) the same for the final token-to-image attention's keys and values.
    """

    keys: torch.Tensor
    first_kv: torch.Tensor
    first_q: torch.Tensor
    later_bias: list
    final_bias: torch.Tensor


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., L, heads * d) -> (..., heads, L, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def _linear(x: torch.Tensor, layer: torch.nn.Linear, dtype: torch.dtype) -> torch.Tensor:
    """``layer(x)`` with the product in ``dtype`` and a float32 result."""
    return F.linear(x.to(dtype), layer.weight, layer.bias).float()


class GridDecoder:
    """Decodes one-point positive prompts (SAM's point grid) on one image embedding at a time.

    Usage::

        decoder = GridDecoder(model)                 # a transformers SamModel
        prepared = decoder.prepare(embedding)        # (1, C, e, e) image embedding
        logits, scores, kept = decoder.decode(prepared, points_xy, min_score=0.88)
    """

    def __init__(self, model):
        self.model = model
        decoder = model.mask_decoder
        self.decoder = decoder
        self.transformer = decoder.transformer
        self.dtype = decoder.iou_token.weight.dtype
        self.heads = self.transformer.layers[0].cross_attn_token_to_image.num_attention_heads
        self.mask_tokens = decoder.num_mask_tokens

    @torch.inference_mode()
    def prepare(self, embedding: torch.Tensor) -> PreparedImage:
        """The prompt-independent tensors of ``embedding`` ((1, C, e, e), the encoder's output)."""
        model, dtype = self.model, self.dtype
        position = model.get_image_wide_positional_embeddings()[0].flatten(1).T.float()  # (N, C)
        no_mask = model.prompt_encoder.no_mask_embed.weight.float()  # (1, C)
        keys = embedding[0].flatten(1).T.float() + no_mask
        first = self.transformer.layers[0]
        token_to_image, image_to_token = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        first_kv = torch.cat([_linear(keys + position, token_to_image.k_proj, dtype),
                              _linear(keys, token_to_image.v_proj, dtype)], dim=1)
        first_q = _linear(keys + position, image_to_token.q_proj, dtype)
        later_bias = []
        for layer in self.transformer.layers[1:]:
            to_image, to_token = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            later_bias.append(torch.cat([_linear(position, to_image.k_proj, dtype),
                                         to_image.v_proj.bias.float().expand(len(keys), -1),
                                         _linear(position, to_token.q_proj, dtype)], dim=1))
        final = self.transformer.final_attn_token_to_image
        final_bias = torch.cat([_linear(position, final.k_proj, dtype),
                                final.v_proj.bias.float().expand(len(keys), -1)], dim=1)
        return PreparedImage(keys, first_kv, first_q, later_bias, final_bias)

    def _fused_weight(self, *layers) -> torch.Tensor:
        """(C, sum of outputs): the layers' weights side by side, in the model's dtype."""
        return torch.cat([layer.weight for layer in layers], dim=0).T.to(self.dtype)

    def _token_to_image(self, attention, queries, query_position, keys, values) -> torch.Tensor:
        """Tokens attend to the image tokens. queries: (B, T, C); keys/values: (B or 1, N, D) projected already.
        Returns the attention output after ``out_proj``, (B, T, C) float32."""
        q = _heads(_linear(queries + query_position, attention.q_proj, self.dtype), self.heads)
        k, v = _heads(keys, self.heads), _heads(values, self.heads)
        weights = torch.softmax((q.to(self.dtype) @ k.transpose(-1, -2).to(self.dtype)).float() * attention.scaling,
                                dim=-1)
        out = (weights.to(self.dtype) @ v.to(self.dtype)).float()  # (B, H, T, d)
        return _linear(out.transpose(1, 2).flatten(2), attention.out_proj, self.dtype)

    def _image_update(self, attention, image_queries, queries, query_position) -> torch.Tensor:
        """The image tokens attend to the tokens. image_queries: (B or 1, N, D) projected already; queries:
        (B, T, C). Returns (B, N, C) float32 without the out-projection's bias: the attention weights times the
        per-head out-projected token values."""
        heads, dtype = self.heads, self.dtype
        k = _heads(_linear(queries + query_position, attention.k_proj, dtype), heads)  # (B, H, T, d)
        v = _heads(_linear(queries, attention.v_proj, dtype), heads)
        q = _heads(image_queries, heads)  # (B or 1, H, N, d)
        weights = torch.softmax((q.to(dtype) @ k.transpose(-1, -2).to(dtype)).float() * attention.scaling, dim=-1)
        out_weight = attention.out_proj.weight.float().T.unflatten(0, (heads, -1))  # (H, d, C)
        projected = v @ out_weight  # (B, H, T, C): each head's token values, out-projected
        batch, _, tokens, channels = projected.shape
        weights = weights.permute(0, 2, 1, 3).flatten(2)  # (B, N, H * T)
        return (weights.to(dtype) @ projected.reshape(batch, heads * tokens, channels).to(dtype)).float()

    def _image_norm(self, keys, update, attention, norm) -> torch.Tensor:
        return F.layer_norm(keys + update + attention.out_proj.bias.float(), norm.normalized_shape,
                            norm.weight.float(), norm.bias.float(), norm.eps)

    def _tokens(self, points_xy: torch.Tensor) -> torch.Tensor:
        """(B, T, C) float32 output tokens + prompt tokens for one positive point each ((B, 2) in the model's
        input frame, x then y)."""
        decoder = self.decoder
        labels = torch.ones((len(points_xy), 1, 1), dtype=torch.long, device=points_xy.device)
        sparse, _ = self.model.prompt_encoder(points_xy[:, None, None].to(self.dtype), labels, None, None)
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        return torch.cat([output_tokens.expand(len(points_xy), -1, -1), sparse[:, 0]], dim=1).float()

    @torch.inference_mode()
    def decode(self, prepared: PreparedImage, points_xy: torch.Tensor, min_score: float | None = None):
        """Decode each point as a one-point positive prompt with three candidate masks.

        Args:
            prepared: :meth:`prepare` of the image's embedding.
            points_xy: (B, 2) float, (x, y) in the model's input frame (resized and padded image pixels).
            min_score: when given, prompts whose three predicted IoUs are all at or below it get no mask logits.

        Returns:
            ``(logits, scores, kept)``: (K, 3, m, m) float32 low-res mask logits of the K kept prompts,
            (B, 3) float32 predicted IoUs of all prompts, and (K,) the kept prompts' indices into ``points_xy``.
        """
        transformer, decoder, dtype = self.transformer, self.decoder, self.dtype
        position = self._tokens(points_xy)
        batch = len(position)
        queries = position
        keys = prepared.keys
        for index, layer in enumerate(transformer.layers):
            if index == 0:  # skip_first_layer_pe: no positional term and no residual
                queries = layer.self_attn(queries[:, None].to(dtype), queries[:, None].to(dtype),
                                          queries[:, None].to(dtype))[0][:, 0].float()
                kv, image_q = prepared.first_kv, prepared.first_q
            else:
                query = (queries + position)[:, None].to(dtype)
                queries = queries + layer.self_attn(query, query, queries[:, None].to(dtype))[0][:, 0].float()
                to_image, to_token = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
                fused = self._fused_weight(to_image.k_proj, to_image.v_proj, to_token.q_proj)
                projected = (keys.to(dtype) @ fused).float() + prepared.later_bias[index - 1]
                inner = projected.shape[-1] // 3
                kv, image_q = projected[..., : 2 * inner], projected[..., 2 * inner:]
            queries = self._layer_norm(queries, layer.layer_norm1)
            inner = kv.shape[-1] // 2
            queries = queries + self._token_to_image(layer.cross_attn_token_to_image, queries, position,
                                                     kv[..., :inner], kv[..., inner:])
            queries = self._layer_norm(queries, layer.layer_norm2)
            queries = self._layer_norm(queries + _mlp(layer.mlp, queries, dtype), layer.layer_norm3)
            update = self._image_update(layer.cross_attn_image_to_token, image_q, queries, position)
            keys = self._image_norm(keys, update, layer.cross_attn_image_to_token, layer.layer_norm4)
        final = transformer.final_attn_token_to_image
        kv = (keys.to(dtype) @ self._fused_weight(final.k_proj, final.v_proj)).float() + prepared.final_bias
        inner = kv.shape[-1] // 2
        queries = queries + self._token_to_image(final, queries, position, kv[..., :inner], kv[..., inner:])
        queries = self._layer_norm(queries, transformer.layer_norm_final_attn)

        scores = _mlp_stack(decoder.iou_prediction_head, queries[:, 0], dtype)[:, 1:]  # multimask candidates
        kept = torch.arange(batch, device=scores.device)
        if min_score is not None:
            kept = torch.nonzero((scores > min_score).any(dim=1)).flatten()
        hyper = torch.stack([_mlp_stack(decoder.output_hypernetworks_mlps[i], queries[kept, i + 1], dtype)
                             for i in range(1, self.mask_tokens)], dim=-1)  # (K, C / 8, 3)
        return self._upscale(keys[kept], hyper), scores, kept

    def _layer_norm(self, x, norm) -> torch.Tensor:
        return F.layer_norm(x, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)

    def _upscale(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Mask logits (K, 3, 4e, 4e) from the final image tokens (K, N, C) and the hypernetwork outputs
        (K, C / 8, 3), channels-last: each transposed convolution (kernel 2, stride 2) is a matrix product per
        embedding pixel, giving its 2 x 2 sub-pixels."""
        decoder, dtype = self.decoder, self.dtype
        count, tokens, _ = keys.shape
        side = int(round(tokens ** 0.5))
        conv1, conv2, norm = decoder.upscale_conv1, decoder.upscale_conv2, decoder.upscale_layer_norm
        weight1 = conv1.weight.permute(0, 2, 3, 1).flatten(1).to(dtype)  # (C, 2 * 2 * C/4): (i, j, channel)
        x = (keys.to(dtype) @ weight1).float().unflatten(-1, (4, -1)) + conv1.bias.float()  # (K, N, 4, C/4)
        x = F.gelu(F.layer_norm(x, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps))
        weight2 = conv2.weight.permute(0, 2, 3, 1).flatten(1).to(dtype)  # (C/4, 2 * 2 * C/8): (k, l, channel)
        x = F.gelu((x.to(dtype) @ weight2).float().unflatten(-1, (4, -1)) + conv2.bias.float())  # (K, N, 4, 4, C/8)
        masks = (x.flatten(1, 3).to(dtype) @ hyper.to(dtype)).float()  # (K, N * 16, 3)
        # (K, h, w, i, j, k, l, 3) -> (K, 3, h, i, k, w, j, l): output pixel (4h + 2i + k, 4w + 2j + l)
        candidates = hyper.shape[-1]
        masks = masks.reshape(count, side, side, 2, 2, 2, 2, candidates).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(count, candidates, 4 * side, 4 * side)


def _mlp(mlp, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """SAM's two-layer MLP block (lin1, activation, lin2) on float32 ``x``."""
    return _linear(mlp.act(_linear(x, mlp.lin1, dtype)), mlp.lin2, dtype)


def _mlp_stack(feed_forward, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """SAM's ``SamFeedForward`` (ReLU between layers, optional sigmoid) on float32 ``x``."""
    x = torch.relu(_linear(x, feed_forward.proj_in, dtype))
    for layer in feed_forward.layers:
        x = torch.relu(_linear(x, layer, dtype))
    x = _linear(x, feed_forward.proj_out, dtype)
    return torch.sigmoid(x) if feed_forward.sigmoid_output else x
