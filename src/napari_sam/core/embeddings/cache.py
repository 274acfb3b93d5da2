"""A least-recently-used cache of image embeddings under a memory budget.

Keys are :class:`EmbeddingKey`: the model, a content signature of the image (its bytes, shape and dtype; see
:func:`~napari_sam.core.image.source.content_signature`), the contrast limits and the layout. The same pixels
shown the same way hit the cache; a changed pixel, contrast or model misses it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EmbeddingKey:
    """What identifies one image embedding: the model (its cache key), the content of the frame (its pixels'
    digest and its model input size), and how its pixel values were mapped."""

    model: str
    content: str
    contrast_limits: tuple[float, float] | None
    rgb: bool


@dataclass
class CachedEmbedding:
    """An image embedding with the sizes needed to map prompts and masks.

    Attributes:
        embedding: (1, C, e, e) tensor from the vision encoder, on the model's device.
        original_size: (H, W) of the image in data pixels.
        resized_size: (h, w) of the image inside the model's padded input.
        extras: the other image features the family's decoder reads (SAM-HQ: the first global ViT block's; SAM2
            family: two high-resolution maps; SAM: none).
    """

    embedding: torch.Tensor
    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    extras: tuple = ()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.embedding, *self.extras))


class EmbeddingCache:
    """Thread-safe LRU of :class:`CachedEmbedding` holding at most ``max_items`` and ``max_bytes``.

    The newest entry is always kept, even when it alone exceeds ``max_bytes``.
    """

    def __init__(self, max_items: int = 1024, max_bytes: int = 1 << 30):
        if max_items < 1 or max_bytes < 0:
            raise ValueError("An embedding cache needs max_items >= 1 and max_bytes >= 0.")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries: OrderedDict[EmbeddingKey, CachedEmbedding] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: EmbeddingKey) -> CachedEmbedding | None:
        """The entry for ``key`` (marked as most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: EmbeddingKey, entry: CachedEmbedding) -> None:
        """Store ``entry``, evicting the least recently used ones beyond the limits."""
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_items or self.nbytes > self.max_bytes
            ):
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached embeddings."""
        return sum(entry.nbytes for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: EmbeddingKey) -> bool:
        return key in self._entries
