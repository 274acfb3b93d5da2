"""napari-sam: Segment Anything (SAM) in napari, through Hugging Face transformers.

The core is importable on its own, without Qt or napari::

    from napari_sam import Predictor, segment_everything
    predictor = Predictor.from_pretrained("tiny-cells")
    predictor.set_image(image)
    mask = predictor.predict(points=[[120, 64]]).best_masks()[0]
    labels = segment_everything(predictor, image).labels
"""

from importlib.metadata import PackageNotFoundError, version

from .core.decoding import Prediction
from .core.embeddings import EmbeddingCache, EmbeddingStore
from .core.errors import ModelLoadError, SegmentationCancelled
from .core.model import DEFAULT_CHECKPOINT, KNOWN_CHECKPOINTS
from .core.predictor import Predictor
from .core.settings import EverythingSettings, PropagationSettings, RefineSettings, TilingSettings, TrainingSettings
from .core.workflows import (
    annotated_planes,
    finetune,
    interpolate,
    propagate,
    propagate_objects,
    propagate_video,
    propagate_video_objects,
    refine_objects,
    segment_concept,
    segment_everything,
)

try:
    __version__ = version("napari-sam")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_CHECKPOINT",
    "KNOWN_CHECKPOINTS",
    "EmbeddingCache",
    "EmbeddingStore",
    "EverythingSettings",
    "ModelLoadError",
    "Prediction",
    "Predictor",
    "PropagationSettings",
    "RefineSettings",
    "SegmentationCancelled",
    "TilingSettings",
    "TrainingSettings",
    "__version__",
    "annotated_planes",
    "finetune",
    "interpolate",
    "propagate",
    "propagate_objects",
    "propagate_video",
    "propagate_video_objects",
    "refine_objects",
    "segment_concept",
    "segment_everything",
]
