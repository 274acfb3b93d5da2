"""The SAM families behind one predictor: what differs between SAM, SAM-HQ, SAM2.1, EdgeTAM and SAM3's tracker,
in one place.

- **Input.** SAM and SAM-HQ resize the longest side to the input size and pad (1024, ImageNet mean/std); SAM2,
  EdgeTAM and SAM3's tracker stretch the image to a square input (1024, or 1008 for SAM3, whose mean/std are 0.5)
  and upsample the low-resolution masks straight to the image's size (:attr:`ModelGeometry.square`).
- **Image features.** SAM's encoder gives one embedding; SAM-HQ adds the first global ViT block's features (used
  by its HQ decoder); the SAM2 family adds two high-resolution feature maps. An embedding is kept as the main
  tensor plus these ``extras`` (:class:`~napari_sam.core.embeddings.cache.CachedEmbedding`).
- **Decoding.** Each family's own transformers mask decoder, called with the cached features; SAM-1's prompts and
  grids use napari-sam's shared-work :class:`~napari_sam.core.decoding.grid_decoder.GridDecoder` (see
  :mod:`~napari_sam.core.decoding.frame_decoder`), the others' grids the model's decoder in chunks of prompts.

Model inputs are in the model's (x, y) input pixels, as the families' processors make them (see
:mod:`~napari_sam.core.decoding.coordinates`).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch

from ..errors import ModelLoadError


@dataclass(frozen=True)
class Family:
    """One SAM family: its transformers config and model classes and how it embeds and decodes.

    Attributes:
        name: the ``model_type`` of its checkpoints' config (``sam``, ``sam_hq``, ``sam2``, ...).
        label: what the model picker calls it.
        config_class, model_class: transformers class names.
        square: the image is stretched to a square input and masks are upsampled straight to the image's size
            (SAM2 family), instead of resized by its longest side and padded (SAM).
        grid_decoder: napari-sam's :class:`GridDecoder` reproduces its mask decoder (SAM-1 only).
        amg_defaults: the family's own automatic-mask-generator defaults where they differ from Meta's SAM-1
            generator (SAM2's generator keeps masks above a predicted IoU of 0.8, not 0.88).
        concept: it segments concepts (text and exemplar boxes; :mod:`~napari_sam.core.workflows.concept`), not prompts.
    """

    name: str
    label: str
    config_class: str
    model_class: str
    square: bool = False
    grid_decoder: bool = False
    amg_defaults: tuple = ()
    concept: bool = False

    def classes(self):
        """(config class, model class) from transformers."""
        import transformers

        return getattr(transformers, self.config_class), getattr(transformers, self.model_class)

    def embed(self, model, pixels: torch.Tensor, grad: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(main embedding (B, C, e, e), extras) of the model inputs ``pixels`` (B, 3, S, S): a batch of frames.
        Extras hold one entry per frame along their first axis, or are shared (first axis of size 1). ``grad``:
        gradients flow (training the encoder), instead of inference mode."""
        method = model.get_vision_features if self.concept else model.get_image_embeddings
        if grad:  # transformers decorates these with torch.no_grad: call what it wraps
            method = functools.partial(inspect.unwrap(method.__func__), model)
        with torch.inference_mode(not grad):
            output = method(pixel_values=pixels)
        if self.name == "sam":
            return output, ()
        if self.name == "sam_hq":
            embedding, intermediate = output
            return embedding, (intermediate[0],)  # the HQ decoder reads only the first global block's features
        if self.concept:  # SAM3 reads its first three FPN levels and their position encodings
            levels, positions = output.fpn_hidden_states, output.fpn_position_encoding
            return levels[2], (levels[0], levels[1], positions[0], positions[1], positions[2])
        return output[-1], tuple(output[:-1])  # SAM2 family: the high-resolution maps, then the embedding

    def decode(self, model, embedding: torch.Tensor, extras: tuple[torch.Tensor, ...], n_objects: int,
               inputs: dict, multimask: bool, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``n_objects`` prompts (``inputs``: transformers' ``input_points`` (n, 1, k, 2),
        ``input_labels`` (n, 1, k), ``input_boxes`` (n, 1, 4), ``input_masks`` (n, 1, m, m), in model pixels) on
        one image's features (first axis 1), or on each prompt's own (first axis n). Returns float32 ``(low-res
        logits (n, c, m, m), predicted IoUs (n, c))``; ``grad``: gradients flow (training), instead of inference
        mode."""
        if self.concept:
            raise ValueError("A SAM3 concept checkpoint finds instances of a text or of exemplar boxes (Segment "
                             "concept, or napari_sam.segment_concept); points and boxes need a SAM, SAM-HQ, SAM2.1 or "
                             "SAM3 tracker checkpoint.")
        expand = [t.expand(n_objects, *t.shape[1:]) for t in (*extras, embedding)]
        arguments: dict[str, torch.Tensor | list[torch.Tensor]]
        if self.name == "sam":
            arguments = {"image_embeddings": expand[-1]}
        elif self.name == "sam_hq":
            arguments = {"image_embeddings": expand[-1], "intermediate_embeddings": expand[:-1]}
        else:  # the SAM2 family: the high-resolution maps, then the embedding
            arguments = {"image_embeddings": expand}
        with torch.inference_mode(not grad):
            output = model(multimask_output=multimask, **arguments, **inputs)
        return output.pred_masks[:, 0].float(), output.iou_scores[:, 0].float()

    def grid_logits(self, model, embedding: torch.Tensor, extras: tuple, points: torch.Tensor,
                    min_score: float | None):
        """One-point prompts ``points`` ((b, 2) model (x, y)) each decoded on its own by the family's mask decoder,
        :data:`GRID_CHUNK` a call: ``(logits (k, 3, m, m), scores (b, 3), kept (k,))`` as
        :meth:`~napari_sam.core.predictor.Predictor.point_grid_logits` returns them."""
        chunks = []
        labels = torch.ones((len(points), 1, 1), dtype=torch.long, device=points.device)
        for start in range(0, len(points), GRID_CHUNK):
            part = points[start: start + GRID_CHUNK]
            inputs = {"input_points": part[:, None, None], "input_labels": labels[start: start + len(part)]}
            chunks.append(self.decode(model, embedding, extras, len(part), inputs, multimask=True))
        logits, scores = torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
        kept = torch.arange(len(points), device=scores.device)
        if min_score is not None:
            kept = torch.nonzero((scores > min_score).any(dim=1)).flatten()
        return logits[kept], scores, kept


#: Points decoded per call of a family's own mask decoder in :meth:`Family.grid_logits`.
GRID_CHUNK = 16


#: The families, by the ``model_type`` of their image checkpoints.
FAMILIES = {family.name: family for family in (
    Family("sam", "SAM", "SamConfig", "SamModel", grid_decoder=True),
    Family("sam_hq", "SAM-HQ", "SamHQConfig", "SamHQModel"),
    Family("sam2", "SAM2.1", "Sam2Config", "Sam2Model", square=True, amg_defaults=(("pred_iou_thresh", 0.8),)),
    Family("edgetam", "EdgeTAM", "EdgeTamConfig", "EdgeTamModel", square=True,
           amg_defaults=(("pred_iou_thresh", 0.8),)),
    Family("sam3_tracker", "SAM3 (tracker: points, boxes, masks)", "Sam3TrackerConfig", "Sam3TrackerModel",
           square=True, amg_defaults=(("pred_iou_thresh", 0.8),)),
    Family("sam3", "SAM3 (concept: text and exemplar boxes)", "Sam3Config", "Sam3Model", square=True, concept=True),
)}
#: Video checkpoints whose image model is one of the families: SAM2's and EdgeTAM's prompt models, SAM3's concept
#: detector (``facebook/sam3`` holds the detector and the tracker).
VIDEO_IMAGE_MODELS = {"sam2_video": "sam2", "edgetam_video": "edgetam", "sam3_video": "sam3"}


def family_of(model_type: str, name: str) -> Family:
    """The family of a checkpoint (``name`` in messages) whose config has ``model_type``.

    Raises:
        ModelLoadError: a model type no family covers, naming the supported ones and what to do with video and
            concept checkpoints.
    """
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if model_type in VIDEO_IMAGE_MODELS:
        return FAMILIES[VIDEO_IMAGE_MODELS[model_type]]
    if model_type.endswith("_video"):
        raise ModelLoadError(f"{name!r} is a video checkpoint (model_type {model_type!r}): choose it under Propagate "
                             "'with' to track objects through a stack; prompting and segment everything need an "
                             "image checkpoint.")
    supported = ", ".join(sorted(FAMILIES))
    raise ModelLoadError(f"{name!r} is a {model_type!r} checkpoint; napari-sam runs the SAM families with "
                         f"model_type {supported} (and their video checkpoints in Propagate).")
