"""What users do with a model: prompted objects, segment everything (and its objects linked through a stack),
propagation through z and t, refinement of existing objects, and SAM3 concepts."""

from .concept import ConceptResult, segment_concept
from .everything import (
    EverythingResult,
    explain_empty,
    frame_count,
    frame_stability,
    merge_frames,
    recover_cut_objects,
    segment_everything,
    segment_frames,
    stability_score,
)
from .linking import link_planes, link_stacks
from .prompting import ObjectResult, predict_objects
from .propagation import (
    PropagatedObjects,
    PropagationResult,
    interior_points,
    interpolate,
    propagate,
    propagate_objects,
    propagate_video,
    propagate_video_objects,
)
from .refine import RefineResult, refine_objects

__all__ = ["ConceptResult", "EverythingResult", "ObjectResult", "PropagatedObjects", "PropagationResult",
           "RefineResult", "explain_empty", "frame_count", "frame_stability", "interior_points", "interpolate",
           "link_planes", "link_stacks", "merge_frames", "predict_objects", "propagate", "propagate_objects",
           "propagate_video", "propagate_video_objects", "recover_cut_objects", "refine_objects", "segment_concept",
           "segment_everything", "segment_frames", "stability_score"]
