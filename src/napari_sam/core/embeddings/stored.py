"""The disk side of a predictor's embedding lookup: frames' embeddings read from and written to an
:class:`~napari_sam.core.embeddings.store.EmbeddingStore`, each under the signature of everything it depends on."""

from __future__ import annotations

import logging
import os

import torch

from ..image import Frame, ImageSource
from ..model import ModelGeometry
from .cache import CachedEmbedding
from .signature import EntrySignature, weights_fingerprint

#: The version of napari-sam's pixel pipeline, part of every stored embedding's signature.
PREPROCESSING_VERSION = "napari-sam-pixels-2"

_log = logging.getLogger(__name__)


class StoredEmbeddings:
    """A store seen by one model.

    Args:
        store: the embedding store.
        model, geometry: the model and its input geometry.
        checkpoint: the checkpoint's name or folder: its last part (not where it lies) names the model, with a
            digest of its weights (computed once, when first needed).
    """

    def __init__(self, store, model, geometry: ModelGeometry, checkpoint: str):
        self.store, self.model, self.geometry = store, model, geometry
        self.label = os.path.basename(os.path.normpath(checkpoint)) or checkpoint
        self._fingerprint: str | None = None
        self.failed_writes = 0  # writes that failed, for runs that must know
        self.last_error: str | None = None  # the latest of them

    def signature(self, frame: Frame, source: ImageSource, content: str, dtype: torch.dtype) -> EntrySignature:
        """Everything the embedding of ``frame`` (whose pixels digest to ``content``) depends on."""
        if self._fingerprint is None:
            self._fingerprint = f"{self.label}#{weights_fingerprint(self.model)}"
        g = self.geometry
        preprocessing = (f"{PREPROCESSING_VERSION}|{g.image_size}|{g.longest_edge}|{g.pad_size}|{g.resample}|"
                         f"{g.do_rescale}|{g.rescale_factor}|{g.do_normalize}|{g.mean}|{g.std}|{g.do_pad}"
                         + (f"|{g.family}|square={g.square}" if g.family != "sam" else ""))
        return EntrySignature(model=self._fingerprint, dtype=str(dtype).removeprefix("torch."),
                              preprocessing=preprocessing,
                              frame=(0, 0, *frame.size, float(frame.scale), int(g.image_size)),
                              contrast=tuple(source.contrast_limits), rgb=bool(source.rgb), content=content)

    def get(self, frame: Frame, source: ImageSource, content: str, device, dtype) -> CachedEmbedding | None:
        """The stored embedding of ``frame`` on ``device`` in ``dtype``, verified, or None."""
        arrays = self.store.get(self.signature(frame, source, content, dtype))
        if arrays is None or "image_embeddings" not in arrays:
            return None
        extras = tuple(arrays[f"extra_{i}"].to(device, dtype) for i in range(len(arrays) - 1)
                       if f"extra_{i}" in arrays)
        if len(extras) != len(arrays) - 1:
            return None
        return CachedEmbedding(embedding=arrays["image_embeddings"].to(device, dtype), original_size=frame.size,
                               resized_size=self.geometry.input_size(frame), extras=extras)

    def put(self, frame: Frame, source: ImageSource, content: str, entry: CachedEmbedding) -> None:
        """Keep ``entry`` in the store; a full or read-only disk is logged, counted in :attr:`failed_writes` and kept
        in :attr:`last_error`, not raised (memory still serves the embedding)."""
        try:
            self.store.put(self.signature(frame, source, content, entry.embedding.dtype),
                           {"image_embeddings": entry.embedding.cpu(),
                            **{f"extra_{i}": extra.cpu() for i, extra in enumerate(entry.extras)}})
        except OSError as error:
            self.failed_writes += 1
            self.last_error = f"{type(error).__name__}: {error}"
            _log.warning("Could not keep an embedding in the store %s: %s", self.store.root, error)

    def holds(self, frame: Frame, source: ImageSource, content: str, dtype: torch.dtype) -> bool:
        """Whether the store holds the embedding of ``frame`` (its entry's signature; the arrays are verified when
        read)."""
        return self.signature(frame, source, content, dtype) in self.store
