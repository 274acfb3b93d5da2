"""What users do with a model: prompted objects, segment everything, propagation through z and t, refinement of
existing objects, and SAM3 concepts."""

from .concept import ConceptResult, segment_concept
from .everything import (
    EverythingResult,
    explain_empty,
    frame_count,
    merge_frames,
    recover_cut_objects,
    segment_everything,
    segment_frames,
)
from .prompting import ObjectResult, predict_objects
from .propagation import PropagationResult, interior_points, propagate, propagate_video
from .refine import RefineResult, refine_objects

__all__ = ["ConceptResult", "EverythingResult", "ObjectResult", "PropagationResult", "RefineResult",
           "explain_empty", "frame_count", "interior_points", "merge_frames", "predict_objects", "propagate",
           "propagate_video", "recover_cut_objects", "refine_objects", "segment_concept", "segment_everything",
           "segment_frames"]
