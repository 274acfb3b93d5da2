"""Where a model runs and in which precision: the device (CUDA, Apple's MPS or the CPU) and the dtype, with
"auto" choosing bfloat16 only where the hardware computes it fast."""

from __future__ import annotations

import torch

#: The devices the docks offer ("cuda:N" works too, and on the command line any of them).
DEVICES = ("auto", "cpu", "cuda", "mps")
#: The precisions they offer: "auto" is bfloat16 where the device computes it fast (:func:`fast_bfloat16`).
PRECISIONS = ("auto", "float32", "bfloat16")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``device``; ``"auto"`` prefers CUDA, then Apple's MPS, then the CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} was asked for, but this torch build sees no CUDA GPU.")
    return resolved


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 much faster than in float32: CUDA GPUs with bf16 support, and
    x86 CPUs with AMX or AVX-512 BF16 instructions (read from ``/proc/cpuinfo``; other systems: no)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | None = None) -> torch.dtype:
    """Return the torch dtype for ``dtype``: None means float32; 'bfloat16'/'float16' are accepted by name;
    'auto' is bfloat16 where ``device`` computes it fast (:func:`fast_bfloat16`), else float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) == "auto":
        return torch.bfloat16 if fast_bfloat16(device or torch.device("cpu")) else torch.float32
    named = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if str(dtype) not in named:
        raise ValueError(f"Unknown dtype {dtype!r}: use one of {sorted(named)}.")
    return named[str(dtype)]
