"""Prompts and the mask decoders: prompts checked and grouped into objects, mapped to SAM's (x, y) at the model
boundary, decoded on an embedded frame (napari-sam's shared-work decoder for SAM, the model's own otherwise), and the
:class:`Prediction` that comes back; and the instance head, which decodes an embedded frame into foreground and
distance maps."""

from .coordinates import boxes_from_normalised, boxes_to_xyxy
from .frame_decoder import FrameDecoder
from .grid_decoder import GridDecoder
from .instance_head import (
    HEAD_FILE,
    HEAD_SECTION,
    HeadSpec,
    InstanceHead,
    encoder_fingerprint,
    head_extras,
    load_head,
    new_head,
    same_encoder,
    save_head,
)
from .prediction import Prediction, downscale_masks, upscale_logits
from .prompts import ObjectPrompt, PromptBatch, check_prompts

__all__ = ["HEAD_FILE", "HEAD_SECTION", "FrameDecoder", "GridDecoder", "HeadSpec", "InstanceHead", "ObjectPrompt",
           "Prediction", "PromptBatch", "boxes_from_normalised", "boxes_to_xyxy", "check_prompts", "downscale_masks",
           "encoder_fingerprint", "head_extras", "load_head", "new_head", "same_encoder", "save_head",
           "upscale_logits"]
