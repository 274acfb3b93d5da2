"""The embeddings of images' frames: from the memory cache, else from the store on disk, else from the encoder, which
takes several frames of the same input size in one batch where that pays (on a GPU, as many as its free memory
holds).

Not thread-safe on its own: the :class:`~napari_sam.core.predictor.Predictor` calls it under its lock (or hands the
lock to :meth:`FrameEmbeddings.embedding_steps`, which takes it batch by batch).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..errors import EncoderNeeded
from ..image import Frame, ImageSource, display_rgb, model_input
from ..model import ModelGeometry
from .cache import CachedEmbedding, EmbeddingCache, EmbeddingKey
from .stored import StoredEmbeddings

#: The most frames encoded in one batch on a GPU.
MAX_ENCODER_BATCH = 8
#: The share of a GPU's free memory a batch of frames may take while it is encoded.
ENCODER_MEMORY_SHARE = 0.5


def encoder_batch(device: torch.device, free_bytes: int | None, bytes_per_frame: int | None) -> int:
    """How many frames to encode at once: one on a CPU (a batch runs no faster there: the cores are busy with one
    frame) and before a frame's peak memory is known; on a GPU as many as :data:`ENCODER_MEMORY_SHARE` of the free
    memory holds, at most :data:`MAX_ENCODER_BATCH`."""
    if device.type == "cpu" or not free_bytes or not bytes_per_frame:
        return 1
    return max(1, min(MAX_ENCODER_BATCH, int(ENCODER_MEMORY_SHARE * free_bytes) // bytes_per_frame))


class FrameEmbeddings:
    """Finds or computes the embeddings of frames for one model.

    Args:
        model, family, geometry: the model, its :class:`~napari_sam.core.model.families.Family` and input geometry.
        device: where the embeddings live; cache_key: the model's part of the memory cache's keys
            (:attr:`Predictor.cache_key <napari_sam.core.predictor.Predictor.cache_key>`).
        cache: the memory cache; checkpoint: the checkpoint's name or folder (names the model in the store).
    """

    def __init__(self, model, family, geometry: ModelGeometry, device: torch.device, cache_key: str,
                 cache: EmbeddingCache, checkpoint: str):
        self.model, self.family, self.geometry, self.device = model, family, geometry, device
        self.cache_key, self.cache, self.checkpoint = cache_key, cache, checkpoint
        self._stored: StoredEmbeddings | None = None
        self._bytes_per_frame: dict = {}  # input size -> a GPU's peak memory for one frame

    @property
    def store(self):
        """The :class:`~napari_sam.core.embeddings.store.EmbeddingStore` embeddings are kept in on disk, or None."""
        return None if self._stored is None else self._stored.store

    @store.setter
    def store(self, store) -> None:
        self._stored = None if store is None else StoredEmbeddings(store, self.model, self.geometry, self.checkpoint)

    def stored(self, frame: Frame, source: ImageSource) -> bool:
        """Whether the store (if any) holds the embedding of ``frame`` of ``source``."""
        kept = self._stored
        return kept is not None and kept.holds(frame, source, self._key(frame, source).content, self.model.dtype)

    @property
    def store_failures(self) -> tuple[int, str | None]:
        """(how many writes to the store failed, the latest one's error ("OSError: ...") or None)."""
        kept = self._stored
        return (0, None) if kept is None else (kept.failed_writes, kept.last_error)

    def _key(self, frame: Frame, source: ImageSource) -> EmbeddingKey:
        resized = self.geometry.input_size(frame)
        return EmbeddingKey(self.cache_key, source.digest(frame) + f"@{resized}", source.contrast_limits, source.rgb)

    def _found(self, frame: Frame, source: ImageSource, key: EmbeddingKey, memory_only: bool):
        cached = self.cache.get(key)
        if cached is not None or memory_only:
            return cached
        kept = self._stored  # the store may be changed meanwhile from another thread
        stored = None if kept is None else kept.get(frame, source, key.content, self.device, self.model.dtype)
        if stored is not None:
            self.cache.put(key, stored)
        return stored

    def get(self, frame: Frame, source: ImageSource, memory_only: bool = False) -> tuple[CachedEmbedding, bool]:
        """The embedding of ``frame`` of ``source`` and whether the encoder ran for it. ``memory_only``: raise
        :class:`~napari_sam.core.errors.EncoderNeeded` instead of reading the store or running the encoder."""
        key = self._key(frame, source)
        found = self._found(frame, source, key, memory_only)
        if found is not None:
            return found, False
        if memory_only:
            raise EncoderNeeded(f"The frame {frame} of the image is not embedded yet.")
        return self._encode([(frame, source, key)])[0], True

    def batch_size(self, frame: Frame) -> int:
        """How many frames of ``frame``'s input size to encode at once (see :func:`encoder_batch`)."""
        free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else None
        return encoder_batch(self.device, free, self._bytes_per_frame.get(self.geometry.input_size(frame)))

    def embed(self, items: list[tuple[Frame, ImageSource]]) -> int:
        """Embed those of the ``(frame, its image's source)`` pairs found neither in memory nor in the store, frames
        of the same input size in one batch; returns how many ran the encoder."""
        missing: list[tuple[Frame, ImageSource, EmbeddingKey]] = []
        keys: set[EmbeddingKey] = set()
        for frame, source in items:
            key = self._key(frame, source)
            if key not in keys and self._found(frame, source, key, memory_only=False) is None:
                missing.append((frame, source, key))  # a frame of the same pixels twice is encoded once
                keys.add(key)
        by_size: dict[tuple[int, int], list[tuple[Frame, ImageSource, EmbeddingKey]]] = {}
        for item in missing:
            by_size.setdefault(self.geometry.input_size(item[0]), []).append(item)
        for group in by_size.values():
            self._encode(group)
        return len(missing)

    def embedding_steps(self, items: list[tuple[Frame, ImageSource]], lock) -> Iterator[tuple[int, int, int]]:
        """:meth:`embed` the pairs in batches of :meth:`batch_size`, each under ``lock``, yielding ``(pairs done,
        pairs in all, how many ran the encoder so far)`` after each batch; stopping the iteration stops there (the
        batches done stay embedded)."""
        computed = done = 0
        while done < len(items):
            batch = items[done: done + self.batch_size(items[done][0])]
            with lock:
                computed += self.embed(batch)
            done += len(batch)
            yield done, len(items), computed

    def embed_batches(self, items: list[tuple[Frame, ImageSource]], lock, progress=None, cancel=None) -> int:
        """:meth:`embedding_steps` run through: ``progress(done, total)`` after each batch, ``cancel()`` checked
        before each. Returns how many ran the encoder."""
        computed = 0
        if cancel is not None and cancel():
            return computed
        for done, total, so_far in self.embedding_steps(items, lock):
            computed = so_far
            if progress is not None:
                progress(done, total)
            if cancel is not None and cancel():
                break
        return computed

    def _encode(self, items: list[tuple[Frame, ImageSource, EmbeddingKey]]) -> list[CachedEmbedding]:
        """Run the encoder on frames of one input size, keep their embeddings in the cache and the store."""
        resized = self.geometry.input_size(items[0][0])
        gpu = self.device.type == "cuda"
        if gpu:
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
        pixels = torch.cat([model_input(display_rgb(source.read(frame), source.contrast_limits, source.rgb,
                                                    device=self.device), self.geometry, dtype=self.model.dtype,
                                        resized=resized) for frame, source, _ in items])
        embedding, extras = self.family.embed(self.model, pixels)
        if gpu:  # what one frame of this size needs at the peak, for the next batch's size
            peak = (torch.cuda.max_memory_allocated(self.device) - before) // len(items)
            self._bytes_per_frame[resized] = max(peak, self._bytes_per_frame.get(resized, 0))
        entries, kept = [], self._stored  # the store may be changed meanwhile from another thread
        for index, (frame, source, key) in enumerate(items):
            own = [t if len(items) == 1 or len(t) != len(items) else t[index: index + 1].clone()
                   for t in (embedding, *extras)]  # a batch's features are copied apart (some are shared)
            entry = CachedEmbedding(embedding=own[0], original_size=frame.size, resized_size=resized,
                                    extras=tuple(own[1:]))
            self.cache.put(key, entry)
            if kept is not None:
                kept.put(frame, source, key.content, entry)
            entries.append(entry)
        return entries
