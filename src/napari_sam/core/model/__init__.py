"""Checkpoints of the SAM families (SAM, SAM-HQ, SAM2.1, EdgeTAM, SAM3): which checkpoint a name means, its geometry
and recommended settings, loading it on a device in a precision, and SAM2-family video checkpoints."""

from .concept_model import ConceptModel, load_tokenizer
from .devices import DEVICES, PRECISIONS, fast_bfloat16, resolve_device, resolve_dtype
from .families import FAMILIES, Family, family_of
from .geometry import ModelGeometry, model_geometry
from .loading import (
    BUNDLED_DIR,
    DEFAULT_CHECKPOINT,
    KNOWN_CHECKPOINTS,
    load_sam,
    read_checkpoint_json,
    require_config,
    resolve_checkpoint,
)
from .recommendations import RECOMMENDATIONS_FILE, Recommendations, read_recommendations
from .video import VIDEO_CHECKPOINTS, VideoGeometry, is_video_checkpoint, load_video_model, video_geometry

__all__ = ["BUNDLED_DIR", "DEFAULT_CHECKPOINT", "DEVICES", "FAMILIES", "KNOWN_CHECKPOINTS", "PRECISIONS",
           "RECOMMENDATIONS_FILE", "VIDEO_CHECKPOINTS", "ConceptModel", "Family", "ModelGeometry", "Recommendations",
           "VideoGeometry", "family_of", "fast_bfloat16", "is_video_checkpoint", "load_sam", "load_tokenizer",
           "load_video_model", "model_geometry", "read_checkpoint_json", "read_recommendations", "require_config",
           "resolve_checkpoint", "resolve_device", "resolve_dtype", "video_geometry"]
