"""napari-sam: Segment Anything (SAM) in napari, through Hugging Face transformers.

The Qt-free core is importable on its own::

    from napari_sam import Predictor
    predictor = Predictor.from_pretrained("facebook/sam-vit-base")
"""

from importlib.metadata import PackageNotFoundError, version

from .core.automatic_mask_generator import segment_everything
from .core.embedding_cache import EmbeddingCache
from .core.model_loading import DEFAULT_CHECKPOINT, KNOWN_CHECKPOINTS, ModelLoadError
from .core.predictor import Prediction, Predictor
from .core.propagation import propagate
from .core.refine import refine_objects
from .core.settings import EverythingSettings, PropagationSettings, RefineSettings

try:
    __version__ = version("napari-sam")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_CHECKPOINT",
    "KNOWN_CHECKPOINTS",
    "EmbeddingCache",
    "EverythingSettings",
    "ModelLoadError",
    "Prediction",
    "Predictor",
    "PropagationSettings",
    "RefineSettings",
    "__version__",
    "propagate",
    "refine_objects",
    "segment_everything",
]
