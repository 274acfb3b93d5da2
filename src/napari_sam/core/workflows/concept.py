"""SAM3 concept segmentation: every instance of a text ("nucleus") and/or of exemplar boxes, with transformers'
``Sam3Model`` and napari-sam's own pre- and post-processing (SAM3's processor imports torchvision).

The image features are the predictor's cached frame embeddings (SAM3's first three FPN levels and their position
encodings); the text features are cached per text. Post-processing follows ``post_process_instance_segmentation``:
an instance's score is sigmoid(its logit) x sigmoid(the presence logit), instances above ``threshold`` are kept,
their mask probabilities are upsampled bilinearly to the frame and thresholded at ``mask_threshold``. A large image
is searched tile by tile: an instance cut by a tile's inner border is kept from the tile that holds it whole, and
duplicates across tiles are merged by box NMS. Exemplar boxes act in the frames that hold them.

Positions are (row, col) image pixels; SAM3's boxes are normalised (cx, cy, w, h) in, (x1, y1, x2, y2) out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..boxes import box_near_crop_edge, nms
from ..decoding import boxes_from_normalised, boxes_to_xyxy
from ..image import Frame
from ..model.concept_model import BOX_ONLY_TEXT, ConceptModel
from ..objects import MaskObject, cropped, paint_labels

#: An instance whose box lies within this many pixels of a tile's inner border is cut by it.
TILE_EDGE_PIXELS = 4.0
#: Box IoU above which instances from different tiles are one.
TILE_NMS = 0.7


@dataclass
class ConceptResult:
    """The instances found, best score first.

    Attributes:
        objects: each instance's mask cropped to its box (:class:`MaskObject`), at the image's resolution.
        scores: (n,) float32, sigmoid(logit) x sigmoid(presence).
        boxes: (n, 4) float32 (row_min, col_min, row_max, col_max) as the model predicted them, in image pixels.
        image_size: (H, W).
    """

    objects: list[MaskObject]
    scores: np.ndarray
    boxes: np.ndarray
    image_size: tuple[int, int]

    @property
    def masks(self) -> np.ndarray:
        """(n, H, W) bool (image-sized: prefer ``objects`` on large images)."""
        return np.stack([obj.full(self.image_size) for obj in self.objects]) if self.objects else np.zeros(
            (0, *self.image_size), dtype=bool)

    def labels(self, out=None, first_id: int = 1):
        """The instances painted into a labels array (largest first, so small ones stay visible)."""
        return paint_labels(self.objects, self.image_size, out, first_id=first_id)


def segment_concept(predictor, text: str | list[str] | None = None, exemplar_boxes=None, exemplar_labels=None,
                    threshold: float = 0.5, mask_threshold: float = 0.5):
    """Every instance of ``text`` and/or of ``exemplar_boxes`` in the predictor's current image.

    Args:
        predictor: a :class:`~napari_sam.core.predictor.Predictor` of a SAM3 concept checkpoint, with an image set.
        text: a noun phrase ("nucleus"); None with exemplar boxes alone; a list of phrases gives a list of results,
            one per phrase (the image is encoded once, each phrase runs the detector).
        exemplar_boxes: (k, 4) (row_min, col_min, row_max, col_max) image pixels, examples of the concept.
        exemplar_labels: (k,) 1 (an example) or 0 (a counter-example); default all 1.
        threshold: minimum instance score (sigmoid(logit) x sigmoid(presence)), in [0, 1].
        mask_threshold: mask probability above which a pixel is in the instance.

    Returns:
        A :class:`ConceptResult` (a list of them for a list of texts).

    Raises:
        ValueError: no text and no box, an empty text, a bad box or label, a model without concept prompts.
    """
    if isinstance(text, (list, tuple)):
        if not text:
            raise ValueError("The list of texts is empty.")
        return [segment_concept(predictor, phrase, exemplar_boxes, exemplar_labels, threshold, mask_threshold)
                for phrase in text]
    concept = getattr(predictor, "concept", None)
    if concept is None:
        raise ValueError(f"{predictor.checkpoint} takes points, boxes and masks; text and exemplar prompts "
                         "need a SAM3 concept checkpoint (model_type 'sam3').")
    if text is not None and not str(text).strip():
        raise ValueError("The text prompt is empty: type what to find, e.g. 'nucleus'.")
    boxes = np.zeros((0, 4)) if exemplar_boxes is None else np.asarray(exemplar_boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.ones(len(boxes), dtype=np.int64) if exemplar_labels is None else np.asarray(exemplar_labels).ravel()
    if text is None and not len(boxes):
        raise ValueError("Give a text, exemplar boxes, or both.")
    if len(labels) != len(boxes) or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"exemplar_labels must be one 0 or 1 per box ({len(boxes)} boxes), got {labels.tolist()}.")
    if not (boxes[:, 2] >= boxes[:, 0]).all() or not (boxes[:, 3] >= boxes[:, 1]).all():
        raise ValueError("Each exemplar box is (row_min, col_min, row_max, col_max) with min <= max.")
    if not 0.0 <= threshold <= 1.0 or not 0.0 <= mask_threshold <= 1.0:
        raise ValueError(f"threshold and mask_threshold must lie in [0, 1], got {threshold}, {mask_threshold}.")
    phrase = str(text).strip() if text is not None else BOX_ONLY_TEXT
    with predictor.locked():
        frames = predictor.frames()
        size = predictor.image_size
        found = [_frame_instances(predictor, concept, frame, phrase, boxes, labels, threshold, mask_threshold,
                                  len(frames) > 1) for frame in frames]
    objects = [obj for part in found for obj in part[0]]
    scores = np.concatenate([part[1] for part in found]) if found else np.zeros(0, np.float32)
    predicted = np.concatenate([part[2] for part in found]).reshape(-1, 4) if found else np.zeros((0, 4))
    if len(frames) > 1 and objects:
        mask_boxes = torch.tensor([obj.box for obj in objects], dtype=torch.float32)
        keep = nms(mask_boxes, torch.from_numpy(scores), TILE_NMS).numpy()
        objects, scores, predicted = [objects[i] for i in keep], scores[keep], predicted[keep]
    order = np.argsort(-scores, kind="stable")
    return ConceptResult([objects[i] for i in order], scores[order].astype(np.float32),
                         predicted[order].astype(np.float32), size)


def _frame_instances(predictor, concept: ConceptModel, frame: Frame, phrase: str, boxes, labels, threshold,
                     mask_threshold, tiled: bool):
    """The instances of one frame: (objects, scores, boxes in image (row, col))."""
    inside = ((boxes[:, 0] >= frame.row0) & (boxes[:, 2] < frame.row1) & (boxes[:, 1] >= frame.col0)
              & (boxes[:, 3] < frame.col1)) if len(boxes) else np.zeros(0, dtype=bool)
    if phrase == BOX_ONLY_TEXT and len(boxes) and not inside.any():
        return [], np.zeros(0, np.float32), np.zeros((0, 4), np.float32)  # no exemplar here, no text
    current, _ = predictor.frame_embedding(frame)
    local = boxes[inside] - np.array([frame.row0, frame.col0] * 2)
    scores, logits, predicted = concept.detect(current.embedding, current.extras, frame.size, phrase,
                                               boxes_to_xyxy(local), labels[inside])
    keep = torch.nonzero(scores > threshold).flatten()
    objects, kept_scores, kept_boxes = [], [], []
    for index in keep.tolist():
        probability = F.interpolate(logits[index][None, None].sigmoid(), size=frame.size, mode="bilinear",
                                    align_corners=False)[0, 0]
        obj = cropped((probability > mask_threshold).cpu().numpy(), frame.row0, frame.col0)
        if obj is None:
            continue
        if tiled:
            box = torch.tensor([obj.box], dtype=torch.float32)
            crop = [frame.row0, frame.col0, frame.row1, frame.col1]
            if bool(box_near_crop_edge(box, crop, [0, 0, *predictor.image_size], atol=TILE_EDGE_PIXELS)[0]):
                continue
        objects.append(obj)
        kept_scores.append(float(scores[index]))
        kept_boxes.append(boxes_from_normalised(predicted[index], frame.size)[0] + [frame.row0, frame.col0] * 2)
    return objects, np.asarray(kept_scores, np.float32), np.asarray(kept_boxes, np.float32).reshape(-1, 4)
