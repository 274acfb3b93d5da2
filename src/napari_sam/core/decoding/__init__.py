"""Prompts and the mask decoders: prompts checked and grouped into objects, mapped to SAM's (x, y) at the model
boundary, decoded on an embedded frame (napari-sam's shared-work decoder for SAM, the model's own otherwise), and the
:class:`Prediction` that comes back."""

from .coordinates import boxes_from_normalised, boxes_to_xyxy
from .frame_decoder import FrameDecoder
from .grid_decoder import GridDecoder
from .prediction import Prediction, downscale_masks, upscale_logits
from .prompts import ObjectPrompt, PromptBatch, check_prompts

__all__ = ["FrameDecoder", "GridDecoder", "ObjectPrompt", "Prediction", "PromptBatch", "boxes_from_normalised",
           "boxes_to_xyxy", "check_prompts", "downscale_masks", "upscale_logits"]
