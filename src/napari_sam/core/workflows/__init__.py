"""What users do with a model: prompted objects, segment everything (and its objects linked through a stack),
propagation through z and t, refinement of existing objects, SAM3 concepts, and fine-tuning a model on the user's
annotations."""

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
from .training import AnnotatedImage, TrainingResult, annotated_planes, finetune

__all__ = ["AnnotatedImage", "ConceptResult", "EverythingResult", "ObjectResult", "PropagatedObjects",
           "PropagationResult", "RefineResult", "TrainingResult", "annotated_planes", "explain_empty", "finetune",
           "frame_count", "frame_stability", "interior_points", "interpolate", "link_planes", "link_stacks",
           "merge_frames", "predict_objects", "propagate", "propagate_objects", "propagate_video",
           "propagate_video_objects", "recover_cut_objects", "refine_objects", "segment_concept",
           "segment_everything", "segment_frames", "stability_score"]
