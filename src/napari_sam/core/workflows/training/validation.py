"""How good a model is on the user's held-out annotations: clicks, boxes and segment everything through the public
API (:class:`~napari_sam.core.predictor.Predictor`, :func:`~napari_sam.core.workflows.everything.segment_everything`),
as a user would get them; a quick score on fixed prompts for choosing the best state while training; and the
segment everything thresholds that find the validation objects best.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ...boxes import nms
from ...objects import mask_iou
from ...settings import EverythingSettings
from ..everything import FrameObjects, merge_frames, segment_everything, segment_frames, thresholds
from .examples import AnnotatedImage, TrainingFrame
from .recipe import TrainingPrompt, decode, random_pixel, true_iou

#: Objects prompted per validation (clicks and boxes), at most; segment everything sees every object.
MAX_PROMPTED = 200
#: The thresholds :func:`calibrate` tries: predicted IoU first (at the base's stability), then stability.
IOU_THRESHOLDS = (0.5, 0.65, 0.75, 0.85)
STABILITY_THRESHOLDS = (0.8, 0.88, 0.95)


def matched(labels: np.ndarray, found: np.ndarray, threshold: float = 0.5,
            ignore: frozenset[int] = frozenset()) -> tuple[int, int, int, int]:
    """(objects, objects found at IoU >= ``threshold``, segments, segments matching an object) of instance images
    ``labels`` (the truth) and ``found``. Objects in ``ignore`` are not counted, nor are segments that lie mostly
    on them (another split's objects, neither right nor wrong here)."""
    labels, found = np.asarray(labels).astype(np.int64), np.asarray(found).astype(np.int64)
    if ignore:
        hidden = np.isin(labels, sorted(ignore))
        found_area = np.bincount(found.ravel())
        on_hidden = np.bincount(found[hidden].ravel(), minlength=len(found_area))
        dropped = np.nonzero(on_hidden * 2 > found_area)[0]
        found = np.where(np.isin(found, dropped[dropped > 0]), 0, found)
        labels = np.where(hidden, 0, labels)
    pairs = np.stack([labels.ravel(), found.ravel()], 1)
    truth_area = np.bincount(labels.ravel())
    found_area = np.bincount(found.ravel())
    keys, counts = np.unique(pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0)], axis=0, return_counts=True)
    ious = counts / (truth_area[keys[:, 0]] + found_area[keys[:, 1]] - counts)
    good = keys[ious >= threshold]
    return (int((truth_area[1:] > 0).sum()), len(np.unique(good[:, 0])), int((found_area[1:] > 0).sum()),
            len(np.unique(good[:, 1])))


@dataclass(frozen=True)
class Figures:
    """A model's figures on validation images.

    Attributes:
        click: median IoU of the best-scoring mask for one click at a random pixel inside each object.
        box: median IoU for each object's bounding box.
        recall, precision: segment everything's objects found at IoU >= 0.5, and its segments that are an object.
        objects: objects prompted; everything: the settings segment everything ran with.
    """

    click: float
    box: float
    recall: float
    precision: float
    objects: int
    everything: EverythingSettings

    @property
    def f1(self) -> float:
        return 2 * self.recall * self.precision / max(1e-9, self.recall + self.precision)

    @property
    def score(self) -> float:
        """One number to compare models by: the mean of click, box and segment everything's F1."""
        return (self.click + self.box + self.f1) / 3

    def to_dict(self) -> dict:
        return {"click_median_iou": round(self.click, 3), "box_median_iou": round(self.box, 3),
                "everything_recall": round(self.recall, 3), "everything_precision": round(self.precision, 3),
                "objects": self.objects}


def everything_counts(predictor, images: list[AnnotatedImage], settings: EverythingSettings) -> np.ndarray:
    """Summed :func:`matched` counts of segment everything with ``settings`` on ``images``."""
    totals = np.zeros(4, dtype=np.int64)
    for item in images:
        found = segment_everything(predictor, item.image, settings, contrast_limits=item.contrast_limits).labels
        totals += matched(item.labels, np.asarray(found), ignore=item.ignore)
    return totals


def recall_precision(counts: np.ndarray) -> tuple[float, float]:
    return float(counts[1] / max(1, counts[0])), float(counts[3] / max(1, counts[2]))


def measure(predictor, images: list[AnnotatedImage], settings: EverythingSettings, seed: int = 0) -> Figures:
    """Clicks (one at a random pixel inside, drawn with ``seed``), boxes and segment everything on ``images``
    through ``predictor``: up to :data:`MAX_PROMPTED` objects prompted, every object counted by segment
    everything."""
    rng = np.random.default_rng(seed)
    chosen = [(item, cell) for item in images for cell in item.ids]
    if len(chosen) > MAX_PROMPTED:
        chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), MAX_PROMPTED, replace=False))]
    clicks, boxes = [], []
    current = None
    for item, cell in chosen:
        if item is not current:
            predictor.set_image(item.image, contrast_limits=item.contrast_limits)
            current = item
        target = item.labels == cell
        rows, cols = np.nonzero(target)
        pick = rng.integers(len(rows))
        click = predictor.predict(points=[[rows[pick], cols[pick]]])
        clicks.append(mask_iou(click.full_masks(click.best_masks())[0], target))
        box = predictor.predict(boxes=[[rows.min(), cols.min(), rows.max(), cols.max()]])
        boxes.append(mask_iou(box.full_masks(box.best_masks())[0], target))
    recall, precision = recall_precision(everything_counts(predictor, images, settings))
    return Figures(float(np.median(clicks)) if clicks else 0.0, float(np.median(boxes)) if boxes else 0.0, recall,
                   precision, len(chosen), settings)


def calibrate(predictor, images: list[AnnotatedImage], base: EverythingSettings,
              cancel=None) -> tuple[EverythingSettings, tuple[float, float]]:
    """The predicted-IoU and stability thresholds of segment everything that find ``images``' objects best (the
    highest F1 of recall and precision at IoU 0.5): each threshold in turn over :data:`IOU_THRESHOLDS` and
    :data:`STABILITY_THRESHOLDS`, the others as in ``base``. Returns (the settings, their (recall, precision)).

    The grid is decoded once per image, at the lowest thresholds tried and without NMS; each pair of thresholds
    then filters those candidates and runs segment everything's NMS and merge on them, which gives what
    :func:`segment_everything` gives with that pair (objects larger than a tile, which it recovers by decoding
    again, are left out here)."""
    low = base.replace(pred_iou_thresh=min((*IOU_THRESHOLDS, base.pred_iou_thresh)),
                       stability_score_thresh=min((*STABILITY_THRESHOLDS, base.stability_score_thresh)),
                       box_nms_thresh=1.0)
    parts = [segment_frames(predictor, item.image, low, contrast_limits=item.contrast_limits) for item in images]

    def counts(settings: EverythingSettings) -> np.ndarray:
        totals = np.zeros(4, dtype=np.int64)
        for item, part in zip(images, parts):
            found = merge_frames([_passing(part, settings)], settings).labels
            totals += matched(item.labels, np.asarray(found), ignore=item.ignore)
        return totals

    return search_settings(base, {"pred_iou_thresh": IOU_THRESHOLDS, "stability_score_thresh": STABILITY_THRESHOLDS},
                           counts, cancel)


def search_settings(base: EverythingSettings, choices: dict[str, tuple], counts, cancel=None):
    """The settings whose matched ``counts(settings)`` have the highest F1: each setting of ``choices`` in turn over
    its values, the others held at the best so far, from ``base``. Returns (the settings, their (recall,
    precision))."""
    def f1(values) -> float:
        recall, precision = recall_precision(values)
        return 2 * recall * precision / max(1e-9, recall + precision)

    best, best_counts = base, counts(base)
    for name, values in choices.items():
        start = best
        for value in values:
            if cancel is not None and cancel():
                break
            candidate = start.replace(**{name: value})
            if candidate == best:
                continue
            tried = counts(candidate)
            if f1(tried) > f1(best_counts):
                best, best_counts = candidate, tried
    return best, recall_precision(best_counts)


def _passing(part: FrameObjects, settings: EverythingSettings) -> FrameObjects:
    """The objects of ``part`` (decoded without NMS) that pass ``settings``' thresholds, each frame's duplicates
    removed by its NMS, as :func:`segment_frames` keeps them."""
    iou_filter, stability_filter = thresholds(settings)
    keep = np.ones(len(part.scores), dtype=bool)
    if iou_filter is not None:
        keep &= part.scores > iou_filter
    if stability_filter is not None:
        keep &= part.stability > stability_filter
    chosen = []
    for frame in np.unique(part.frames[keep]):
        rows = np.nonzero(keep & (part.frames == frame))[0]
        survivors = nms(torch.from_numpy(part.boxes[rows]), torch.from_numpy(part.scores[rows]),
                        settings.box_nms_thresh).numpy()
        chosen += rows[survivors].tolist()
    rows = np.asarray(sorted(chosen), dtype=np.int64)
    return replace(part, objects=[part.objects[i] for i in rows], scores=part.scores[rows],
                   stability=part.stability[rows], boxes=part.boxes[rows].reshape(-1, 4),
                   points=part.points[rows].reshape(-1, 2), frames=part.frames[rows])


def validation_prompts(frames: list[TrainingFrame], seed: int, limit: int = 96) -> list[TrainingPrompt]:
    """Fixed prompts for the quick score: for up to ``limit`` objects of the validation frames, a click at a random
    pixel inside and its exact box (pairs, click first)."""
    rng = np.random.default_rng(seed)
    pairs = [(index, cell) for index, frame in enumerate(frames) for cell in torch.unique(frame.labels).tolist()
             if cell > 0 and int((frame.labels == cell).sum()) >= 3]
    if len(pairs) > limit:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), limit, replace=False))]
    prompts = []
    for index, cell in pairs:
        target = frames[index].labels == cell
        rows, cols = torch.nonzero(target, as_tuple=True)
        box = np.array([rows.min(), cols.min(), rows.max(), cols.max()], dtype=np.float32)
        prompts.append(TrainingPrompt(index, target, random_pixel(rng, target)[None], np.array([1])))
        prompts.append(TrainingPrompt(index, target, box=box))
    return prompts


@torch.no_grad()
def quick_score(model, family, features, prompts: list[TrainingPrompt]) -> float:
    """Mean IoU of the best-scoring candidate for each of the fixed validation ``prompts`` (in the model input)."""
    if not prompts:
        return 0.0
    ious = []
    for start in range(0, len(prompts), 64):
        part = prompts[start: start + 64]
        logits, scores = decode(model, family, features, part, True, grad=False)
        best = scores.argmax(dim=1)
        rows = torch.arange(len(part))
        targets = torch.stack([p.target for p in part]).to(logits.device)
        ious.append(true_iou(logits[rows, best][:, None], targets)[:, 0])
    return float(torch.cat(ious).mean())
