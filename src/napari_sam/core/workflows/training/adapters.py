"""LoRA adapters on the image encoder's attention, through ``peft``: added before training, merged into the weights
after, so that the saved checkpoint is a plain one of its family."""

from __future__ import annotations

import re

import torch

#: The image encoder's attention projections the adapters go on: SAM's and SAM-HQ's fused ``qkv``, the SAM2
#: family's ``qkv`` or separate ``q_proj``/``k_proj``/``v_proj``.
ATTENTION = re.compile(r"(^|\.)vision_encoder\..*\.(qkv|q_proj|k_proj|v_proj)$")


def attention_layers(model) -> list[str]:
    """The names of the encoder's attention projections (linear layers) in ``model``."""
    return [name for name, module in model.named_modules()
            if ATTENTION.search(name) and isinstance(module, torch.nn.Linear)]


def add_lora(model, rank: int, seed: int):
    """``model`` with LoRA adapters of ``rank`` (alpha 2 x rank) on its encoder's attention; the adapters start at
    zero (B = 0), so the model is unchanged until trained. Returns the wrapped model.

    Raises:
        ValueError: the encoder has no attention projection that adapters fit (naming the family's modules).
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = attention_layers(model)
    if not targets:
        raise ValueError(f"{type(model).__name__}'s image encoder has no attention projection (qkv, q_proj, k_proj, "
                         "v_proj) for LoRA adapters; train it with --encoder none or full.")
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets, bias="none")
    return inject_adapter_in_model(config, model)


def lora_parameters(model) -> list[torch.nn.Parameter]:
    return [p for name, p in model.named_parameters() if "lora_" in name]


def merge_lora(model) -> None:
    """Merge every LoRA adapter of ``model`` into its base weights and put the base layers back in place."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
