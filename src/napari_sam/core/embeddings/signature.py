"""What an embedding kept on disk depends on: :class:`EntrySignature` (the key of an entry of the
:class:`~napari_sam.core.embeddings.store.EmbeddingStore`) and :func:`weights_fingerprint` (the model's share)."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, fields

import numpy as np
import torch

STORE_FORMAT = 1  # of the store's layout; part of every key, so another layout never reads this one
FINGERPRINT_VALUES = 2048  # values sampled per tensor by weights_fingerprint


def _numbers(name: str, values, length: int) -> tuple:
    values = tuple(values) if isinstance(values, (tuple, list, np.ndarray)) else None
    if values is None or len(values) != length or not all(
            isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v) for v in values):
        raise ValueError(f"EntrySignature.{name} must be {length} finite numbers, got {values!r}.")
    return values


@dataclass(frozen=True)
class EntrySignature:
    """Everything an embedding depends on; :meth:`key` is a hex digest of all fields (the entry's name).

    Attributes:
        model: the model's fingerprint (checkpoint name and :func:`weights_fingerprint`), given by the caller.
        dtype: the model's dtype, e.g. ``"float32"``, ``"bfloat16"``.
        preprocessing: napari-sam's preprocessing version and the checkpoint's preprocessing settings.
        frame: (row0, col0, row1, col1, scale, input_size): the image region embedded (whole numbers), its scale
            into the model input (a positive float) and the model's input size; normalised to int and float.
        contrast: (low, high) contrast limits, normalised to floats.
        rgb: whether the last axis is colour.
        content: a digest of the frame's pixels, given by the caller.
    """

    model: str
    dtype: str
    preprocessing: str
    frame: tuple
    contrast: tuple
    rgb: bool
    content: str

    def __post_init__(self):
        for name in ("model", "dtype", "preprocessing", "content"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"EntrySignature.{name} must be a non-empty string, got {value!r}.")
        frame = _numbers("frame", self.frame, 6)
        if not all(float(frame[i]).is_integer() for i in (0, 1, 2, 3, 5)) or frame[4] <= 0:
            raise ValueError("EntrySignature.frame must be (row0, col0, row1, col1, scale, input_size): whole numbers "
                             f"and a positive scale, got {frame!r}.")
        contrast = _numbers("contrast", self.contrast, 2)
        if not isinstance(self.rgb, (bool, np.bool_)):
            raise ValueError(f"EntrySignature.rgb must be True or False, got {self.rgb!r}.")
        object.__setattr__(self, "frame", tuple(float(v) if i == 4 else int(v) for i, v in enumerate(frame)))
        object.__setattr__(self, "contrast", tuple(float(v) for v in contrast))
        object.__setattr__(self, "rgb", bool(self.rgb))

    def to_dict(self) -> dict:
        """The fields as JSON values (tuples as lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> EntrySignature:
        """The signature of :meth:`to_dict`'s output; ValueError for missing or extra fields."""
        names = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or set(values) != names:
            raise ValueError(f"an entry signature needs exactly the fields {sorted(names)}.")
        return cls(**values)

    def key(self) -> str:
        """32 hex digits: BLAKE2b (128 bits) of the format version and every field, as canonical JSON."""
        text = json.dumps({"format": STORE_FORMAT, **self.to_dict()}, sort_keys=True, separators=(",", ":"))
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module, values_per_tensor: int = FINGERPRINT_VALUES) -> str:
    """32 hex digits identifying a module's weights, cheap for large models.

    BLAKE2b (128 bits) of each state-dict tensor's name, shape and dtype and of at most ``values_per_tensor`` of
    its values, taken at evenly strided flat positions (every value of a smaller tensor). Identical weights give
    the same digest on any device; retrained or re-randomised weights give another.
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(repr((name, tuple(tensor.shape), str(tensor.dtype))).encode())
        count = tensor.numel()
        if count == 0 or tensor.is_meta:
            continue
        flat = tensor.detach().reshape(-1)
        if count > values_per_tensor:
            flat = flat[torch.arange(values_per_tensor, device=flat.device) * count // values_per_tensor]
        digest.update(flat.cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()
