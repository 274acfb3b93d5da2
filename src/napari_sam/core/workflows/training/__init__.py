"""Fine-tuning a checkpoint on the user's own annotations (``napari-sam train``, the *Train* dock): the annotated
images and their split, SAM's interactive training recipe, validation before and after, LoRA adapters, and the
checkpoint folder written at the end."""

from .examples import AnnotatedImage, Split, annotated_planes, split
from .finetune import Trainer, TrainingProgress, TrainingResult, WorseThanBase, finetune
from .validation import Figures, matched

__all__ = ["AnnotatedImage", "Figures", "Split", "Trainer", "TrainingProgress", "TrainingResult", "WorseThanBase",
           "annotated_planes", "finetune", "matched", "split"]
