"""Image embeddings: kept in memory (:class:`EmbeddingCache`) and on disk (:class:`EmbeddingStore`, entries checked
against their signature before use), and computed by the encoder in batches where that pays
(:class:`FrameEmbeddings`)."""

from .cache import CachedEmbedding, EmbeddingCache, EmbeddingKey
from .frame_embeddings import FrameEmbeddings
from .signature import EntrySignature, weights_fingerprint
from .store import DEFAULT_STORE_GB, EmbeddingStore, store_bytes

__all__ = ["DEFAULT_STORE_GB", "CachedEmbedding", "EmbeddingCache", "EmbeddingKey", "EmbeddingStore", "EntrySignature",
           "FrameEmbeddings", "store_bytes", "weights_fingerprint"]
