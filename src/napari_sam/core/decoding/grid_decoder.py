"""SAM's mask decoder for prompts on one image, sharing the work that does not depend on the prompt.

Segment everything decodes a grid of ~1000 one-point prompts on the same image embedding, and a user's clicks
and boxes are decoded one after another on the same embedding too. transformers'
``SamMaskDecoder`` treats each prompt on its own: it copies the image embedding and its positional encoding per
prompt, projects every image token to keys, values and queries in every block, and runs the upscaling
channels-first with permutes in between. :class:`GridDecoder` computes the same function (the same weights, the
same operations up to floating-point rounding and their order) with far less work per prompt:

- the first two-way block's image side (keys, values, image queries) and the positional encoding's projections
  are computed once per image (:meth:`GridDecoder.prepare`);
- attention between the ~7 prompt tokens and the N image tokens never projects the image tokens: a token's query
  is moved through the key projection instead (q . W x = (W^T q) . x), and the values are projected after the
  attention-weighted sum (sum_n p_n W x_n = W sum_n p_n x_n), since the weights of a head sum to 1;
- the image tokens' update from the tokens is the attention weights times each head's out-projected token values,
  a (heads x tokens)-rank product;
- softmaxes over the tokens run over a middle axis, not a last axis of ~7 (much faster on CPUs);
- the upscaling works channels-last: each transposed convolution (kernel 2, stride 2) is one matrix product, the
  layer norm needs no permute, and the mask logits are assembled once at the end;
- prompts whose candidates all score below ``min_score`` (the caller's predicted-IoU filter) skip the upscaling.

Any prompt the model takes goes through :meth:`GridDecoder.decode_prompts`: points of either sign and a box give
the prompt tokens (the model's own prompt encoder); a mask prompt's dense embedding replaces the no-mask embedding
in :meth:`GridDecoder.prepare`, which then recomputes only the first block's image side.

The image tokens stay in the model's dtype (bf16 weights: bf16 products, much faster on CPUs with AMX); the few
prompt tokens, the softmaxes and the per-image precomputation run in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Bytes of upscaling work done at once (SAM ViT-B at 1024: one prompt at a time).
UPSCALE_BYTES = 4 << 20
#: Bytes of image tokens decoded at once in :meth:`GridDecoder.decode_all`: each prompt has its own copy of the
#: image tokens after the first block, and small chunks keep them in the CPU's caches (SAM ViT-B at 1024, 4 MiB per
#: prompt in float32: one prompt at a time in float32, two in bfloat16, measured fastest on CPU).
DECODER_BYTES = 4 << 20


@dataclass
class PreparedImage:
    """The prompt-independent part of the decoder for one image embedding, in the model's dtype. N = e² image
    tokens in row-major order over the e x e embedding grid; H heads of d channels in the cross-attentions.

    Attributes:
        keys: (N, C) the image embedding plus the no-mask embedding (the first block's image tokens).
        first_keys: (H, d, N) the first block's token-to-image keys, per head, transposed.
        first_values: (H, N, d) its values.
        image_queries: per block, (H, d, N): the image-to-token queries of the first block's image tokens
            (the whole projection), then for each later block the positional encoding's part (its projection plus
            the bias), to which the image tokens' part is added per prompt.
        position_keys: per later block and the final attention, (H, d, N): the positional encoding's part of the
            token-to-image keys (its projection plus the bias).
    """

    keys: torch.Tensor
    first_keys: torch.Tensor
    first_values: torch.Tensor
    image_queries: list
    position_keys: list


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., L, heads * d) -> (..., heads, L, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    """``layer(x)`` for float32 tokens: the product in the layer's dtype, a float32 result."""
    return F.linear(x.to(layer.weight.dtype), layer.weight, layer.bias).float()


def _per_head(layer: torch.nn.Linear, heads: int) -> torch.Tensor:
    """(H, d, C) float32: the projection's weight, one (d, C) block per head."""
    return layer.weight.float().unflatten(0, (heads, -1))


class GridDecoder:
    """Decodes one-point positive prompts (SAM's point grid), or any prompts, on one image embedding at a time.

    Usage::

        decoder = GridDecoder(model)                 # a transformers SamModel
        prepared = decoder.prepare(embedding)        # (1, C, e, e) image embedding
        logits, scores, kept = decoder.decode(prepared, points_xy, min_score=0.88)
        logits, scores = decoder.decode_prompts(prepared, {"input_points": ..., "input_labels": ...})
    """

    def __init__(self, model):
        self.model = model
        decoder = model.mask_decoder
        self.decoder = decoder
        self.transformer = decoder.transformer
        self.dtype = decoder.iou_token.weight.dtype
        self.heads = self.transformer.layers[0].cross_attn_token_to_image.num_attention_heads
        self.mask_tokens = decoder.num_mask_tokens
        with torch.no_grad():  # transposed convolutions (kernel 2, stride 2) as products: (C_in, (i, j, C_out))
            self.upscale = [(conv.weight.permute(0, 2, 3, 1).flatten(1), conv.bias.repeat(4))
                            for conv in (decoder.upscale_conv1, decoder.upscale_conv2)]

    @torch.inference_mode()
    def prepare(self, embedding: torch.Tensor, dense: torch.Tensor | None = None,
                base: PreparedImage | None = None) -> PreparedImage:
        """The prompt-independent tensors of ``embedding`` ((1, C, e, e), the encoder's output).

        ``dense``: (C, e, e) a mask prompt's dense embedding, in place of the no-mask embedding; ``base``:
        :meth:`prepare` of the same ``embedding`` without one, whose positional parts are reused."""
        model, dtype, heads = self.model, self.dtype, self.heads
        position = model.get_image_wide_positional_embeddings()[0].flatten(1).T.float()  # (N, C)
        prompt = model.prompt_encoder.no_mask_embed.weight.float() if dense is None else dense.flatten(1).T.float()
        keys = embedding[0].flatten(1).T.float() + prompt

        def per_head(x, layer):  # (N, C) -> (H, d, N): projected in float32, stored in the model's dtype
            projected = F.linear(x, layer.weight.float(), layer.bias.float())
            return _heads(projected, heads).transpose(-1, -2).contiguous().to(dtype)

        first = self.transformer.layers[0]
        later = self.transformer.layers[1:]
        image_queries = [per_head(keys + position, first.cross_attn_image_to_token.q_proj)]
        attentions = [layer.cross_attn_token_to_image for layer in later] + [self.transformer.final_attn_token_to_image]
        if base is None:
            image_queries += [per_head(position, layer.cross_attn_image_to_token.q_proj) for layer in later]
            position_keys = [per_head(position, attention.k_proj) for attention in attentions]
        else:
            image_queries += base.image_queries[1:]
            position_keys = base.position_keys
        return PreparedImage(
            keys=keys.to(dtype),
            first_keys=per_head(keys + position, first.cross_attn_token_to_image.k_proj),
            first_values=per_head(keys, first.cross_attn_token_to_image.v_proj).transpose(-1, -2).contiguous(),
            image_queries=image_queries, position_keys=position_keys)

    def _token_to_image(self, attention, queries, query_position, keys, position_keys) -> torch.Tensor:
        """The tokens attend to the image tokens; returns the attention output after ``out_proj``, (B, T, C)
        float32.

        queries: (B, T, C) float32 tokens; keys: (B, N, C) image tokens, whose key projection is folded into the
        queries and whose value projection is applied after the weighted sum; position_keys: (H, d, N)."""
        heads, dtype = self.heads, self.dtype
        q = _heads(_linear(queries + query_position, attention.q_proj), heads)  # (B, H, T, d)
        batch, _, tokens, _ = q.shape
        moved = torch.einsum("bhtd,hdc->bhtc", q, _per_head(attention.k_proj, heads)).flatten(1, 2).to(dtype)
        logits = torch.bmm(moved, keys.transpose(1, 2)).unflatten(1, (heads, tokens)).float()
        logits += (q.to(dtype) @ position_keys).float()  # (B, H, T, N)
        weights = torch.softmax(logits * attention.scaling, dim=-1).to(dtype)
        summed = torch.bmm(weights.flatten(1, 2), keys).unflatten(1, (heads, tokens)).float()  # (B, H, T, C)
        out = torch.einsum("bhtc,hdc->bhtd", summed, _per_head(attention.v_proj, heads))
        out = out + attention.v_proj.bias.float().unflatten(0, (heads, 1, -1))
        return _linear(out.transpose(1, 2).flatten(2), attention.out_proj)

    def _first_token_to_image(self, attention, queries, query_position, prepared: PreparedImage) -> torch.Tensor:
        """:meth:`_token_to_image` of the first block, whose keys and values were projected in :meth:`prepare`."""
        q = _heads(_linear(queries + query_position, attention.q_proj), self.heads).to(self.dtype)
        weights = torch.softmax((q @ prepared.first_keys).float() * attention.scaling, dim=-1).to(self.dtype)
        out = (weights @ prepared.first_values).float()  # (B, H, T, d)
        return _linear(out.transpose(1, 2).flatten(2), attention.out_proj)

    def _image_update(self, attention, norm, keys, image_queries, queries, query_position, fold: bool):
        """The image tokens attend to the tokens, then the residual and the layer norm.

        keys: (B or 1, N, C) image tokens; image_queries: (H, d, N) their queries (``fold`` False) or only the
        positional part (``fold`` True: the image tokens' part is folded into the token keys); queries: (B, T, C)
        float32 tokens. The attention output is the attention weights times each head's out-projected token values
        ((B, N, H * T) @ (B, H * T, C)); the out-projection's bias is spread over the heads (each head's weights sum
        to 1). Returns the new image tokens, (B, N, C)."""
        heads, dtype = self.heads, self.dtype
        k = _heads(_linear(queries + query_position, attention.k_proj), heads)  # (B, H, T, d)
        batch, _, tokens, _ = k.shape
        logits = (k.to(dtype) @ image_queries).float()  # (B, H, T, N)
        if fold:
            moved = torch.einsum("bhtd,hdc->bhtc", k, _per_head(attention.q_proj, heads)).flatten(1, 2).to(dtype)
            logits += torch.bmm(moved, keys.transpose(1, 2)).unflatten(1, (heads, tokens)).float()
        # the softmax runs over the tokens, a middle axis (much faster than a last axis of ~7)
        weights = torch.softmax(logits * attention.scaling, dim=2).to(dtype)
        v = _heads(_linear(queries, attention.v_proj), heads)
        out_weight = attention.out_proj.weight.float().T.unflatten(0, (heads, -1))  # (H, d, C)
        projected = v @ out_weight + attention.out_proj.bias.float() / heads  # (B, H, T, C)
        weights = weights.flatten(1, 2).transpose(1, 2)  # (B, N, H * T), a view
        keys = torch.baddbmm(keys.expand(batch, -1, -1), weights, projected.flatten(1, 2).to(dtype))
        return F.layer_norm(keys, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    def _tokens(self, sparse: torch.Tensor) -> torch.Tensor:
        """(B, T, C) float32 output tokens + the prompt tokens ``sparse`` (B, T', C) of the prompt encoder."""
        decoder = self.decoder
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        return torch.cat([output_tokens.expand(len(sparse), -1, -1), sparse], dim=1).float()

    @torch.inference_mode()
    def decode_prompts(self, prepared: PreparedImage, inputs: dict, multimask: bool = True):
        """Decode B objects' prompts as the model's mask decoder does.

        Args:
            prepared: :meth:`prepare` of the image's embedding (with the objects' mask prompt as ``dense``, if
                any: then B is 1).
            inputs: transformers' ``input_points`` (B, 1, k, 2), ``input_labels`` (B, 1, k), ``input_boxes``
                (B, 1, 4), each optional, (x, y) in the model's input frame.
            multimask: three candidates (True) or the single-mask output.

        Returns:
            ``(logits, scores)``: (B, c, m, m) float32 low-res mask logits and (B, c) float32 predicted IoUs.
        """
        sparse, _ = self.model.prompt_encoder(inputs.get("input_points"), inputs.get("input_labels"),
                                              inputs.get("input_boxes"), None)
        logits, scores, _ = self._decode_tokens(prepared, self._tokens(sparse[:, 0]), None, multimask)
        return logits, scores

    @torch.inference_mode()
    def decode_all(self, prepared: PreparedImage, points_xy: torch.Tensor, min_score: float | None = None):
        """:meth:`decode` of any number of points, in chunks of :data:`DECODER_BYTES` of image tokens; the kept
        indices refer to ``points_xy``."""
        chunk = max(1, DECODER_BYTES // (prepared.keys.numel() * prepared.keys.element_size()))
        logits, scores, kept = [], [], []
        for start in range(0, len(points_xy), chunk):  # small chunks: the work stays in the caches
            chunk_logits, chunk_scores, chunk_kept = self.decode(prepared, points_xy[start: start + chunk], min_score)
            logits.append(chunk_logits)
            scores.append(chunk_scores)
            kept.append(chunk_kept + start)
        return torch.cat(logits), torch.cat(scores), torch.cat(kept)

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
        labels = torch.ones((len(points_xy), 1, 1), dtype=torch.long, device=points_xy.device)
        sparse, _ = self.model.prompt_encoder(points_xy[:, None, None].to(self.dtype), labels, None, None)
        return self._decode_tokens(prepared, self._tokens(sparse[:, 0]), min_score, multimask=True)

    def _decode_tokens(self, prepared: PreparedImage, position: torch.Tensor, min_score: float | None,
                       multimask: bool):
        """:meth:`decode` of the tokens ``position`` (B, T, C) float32 (the output tokens, then the prompt's)."""
        transformer, decoder, dtype = self.transformer, self.decoder, self.dtype
        batch = len(position)
        queries, keys = position, prepared.keys[None]
        for index, layer in enumerate(transformer.layers):
            if index == 0:  # skip_first_layer_pe: no positional term and no residual
                tokens = queries[:, None].to(dtype)
                queries = layer.self_attn(tokens, tokens, tokens)[0][:, 0].float()
                queries = _layer_norm(queries, layer.layer_norm1)
                attended = self._first_token_to_image(layer.cross_attn_token_to_image, queries, position, prepared)
            else:
                query = (queries + position)[:, None].to(dtype)
                queries = queries + layer.self_attn(query, query, queries[:, None].to(dtype))[0][:, 0].float()
                queries = _layer_norm(queries, layer.layer_norm1)
                attended = self._token_to_image(layer.cross_attn_token_to_image, queries, position,
                                                keys, prepared.position_keys[index - 1])
            queries = _layer_norm(queries + attended, layer.layer_norm2)
            queries = _layer_norm(queries + _linear(layer.mlp.act(_linear(queries, layer.mlp.lin1)), layer.mlp.lin2),
                                  layer.layer_norm3)
            keys = self._image_update(layer.cross_attn_image_to_token, layer.layer_norm4, keys,
                                      prepared.image_queries[index], queries, position, fold=index > 0)
        final = transformer.final_attn_token_to_image
        queries = queries + self._token_to_image(final, queries, position, keys, prepared.position_keys[-1])
        queries = _layer_norm(queries, transformer.layer_norm_final_attn)

        chosen = range(1, self.mask_tokens) if multimask else range(1)  # the candidates, or the single mask
        scores = _feed_forward(decoder.iou_prediction_head, queries[:, 0])[:, chosen.start: chosen.stop]
        kept = torch.arange(batch, device=scores.device)
        if min_score is not None:
            kept = torch.nonzero((scores > min_score).any(dim=1)).flatten()
        hyper = torch.stack([_feed_forward(decoder.output_hypernetworks_mlps[i], queries[kept, i + 1])
                             for i in chosen], dim=-1)  # (K, C / 8, c)
        # a few prompts at a time: their upscaled tensors (~2 x the image tokens) stay in the CPU's caches
        group = max(1, UPSCALE_BYTES // (2 * keys[0].numel() * keys.element_size()))
        keys = keys[kept]
        if len(kept) <= group:
            return self._upscale(keys, hyper), scores, kept
        return torch.cat([self._upscale(keys[i: i + group], hyper[i: i + group])
                          for i in range(0, len(kept), group)]), scores, kept

    def _upscale(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Mask logits (K, c, 4e, 4e) float32 from the final image tokens (K, N, C) and the hypernetwork outputs
        (K, C / 8, c) float32 (c candidates), channels-last: each transposed convolution (kernel 2, stride 2) is one
        product per embedding pixel giving its 2 x 2 sub-pixels, so the layer norm needs no permute."""
        count, tokens, channels = keys.shape
        side = int(round(tokens ** 0.5))
        (weight1, bias1), (weight2, bias2) = self.upscale
        norm = self.decoder.upscale_layer_norm
        x = torch.addmm(bias1, keys.reshape(-1, channels), weight1).unflatten(-1, (4, -1))  # (K N, 4, C/4)
        x = F.gelu(F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
        x = F.gelu(torch.addmm(bias2, x.flatten(0, 1), weight2))  # (K N 4, 4 * C/8)
        masks = x.reshape(count, tokens * 16, channels // 8) @ hyper.to(x.dtype)  # (K, N * 16, 3)
        # (K, h, w, i, j, k, l, 3) -> (K, 3, h, i, k, w, j, l): output pixel (4h + 2i + k, 4w + 2j + l), in one copy
        candidates = hyper.shape[-1]
        logits = torch.empty((count, candidates, 4 * side, 4 * side), dtype=torch.float32, device=keys.device)
        logits.view(count, candidates, side, 2, 2, side, 2, 2).copy_(
            masks.reshape(count, side, side, 2, 2, 2, 2, candidates).permute(0, 7, 1, 3, 5, 2, 4, 6))
        return logits


def _layer_norm(x: torch.Tensor, norm) -> torch.Tensor:
    """``norm`` on float32 tokens, in float32."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)


def _feed_forward(feed_forward, x: torch.Tensor) -> torch.Tensor:
    """SAM's ``SamFeedForward`` (ReLU between layers, optional sigmoid) on float32 tokens."""
    x = torch.relu(_linear(x, feed_forward.proj_in))
    for layer in feed_forward.layers:
        x = torch.relu(_linear(x, layer))
    x = _linear(x, feed_forward.proj_out)
    return torch.sigmoid(x) if feed_forward.sigmoid_output else x
