"""Candidate masks of segment everything, kept at low resolution, in the spirit of segment-anything's ``MaskData``:
parallel tensors with one row per candidate, filtered and joined together."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Candidates:
    """Candidate masks, one row each, all on one device.

    Attributes:
        logits: (n, m, m) float16 low-resolution mask logits in their crop's model frame.
        scores: (n,) float32 predicted IoU.
        stability: (n,) float32 stability score (computed at the crop's full resolution).
        boxes: (n, 4) float32 (row_min, col_min, row_max, col_max), inclusive, in image data pixels.
        points: (n, 2) float32 (row, col) of the grid point that prompted the candidate, in image data pixels.
        crops: (n,) int64 index of the crop the candidate comes from.
    """

    logits: torch.Tensor
    scores: torch.Tensor
    stability: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    crops: torch.Tensor

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, keep) -> Candidates:
        """The candidates selected by ``keep`` (a bool mask or indices)."""
        return Candidates(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    @classmethod
    def empty(cls, mask_size: int, device) -> Candidates:
        def zeros(*shape, dtype=torch.float32):
            return torch.zeros(shape, dtype=dtype, device=device)

        return cls(logits=zeros(0, mask_size, mask_size, dtype=torch.float16), scores=zeros(0), stability=zeros(0),
                   boxes=zeros(0, 4), points=zeros(0, 2), crops=zeros(0, dtype=torch.long))

    @classmethod
    def cat(cls, parts: list[Candidates], mask_size: int, device) -> Candidates:
        """All ``parts`` in one (an empty record when there are none)."""
        parts = [part for part in parts if len(part)]
        if not parts:
            return cls.empty(mask_size, device)
        return cls(**{f.name: torch.cat([getattr(part, f.name) for part in parts]) for f in fields(cls)})
