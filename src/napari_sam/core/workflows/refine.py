"""Refining existing objects (committed earlier, or from Cellpose, StarDist, a threshold ...) with SAM.

Each object of a labels plane is prompted by its bounding box and, for checkpoints trained with mask prompts, its
mask; SAM's best-scoring mask replaces it. Objects are decoded in batches of boxes, grouped by the frame their box is
decoded in (on a large image seen in tiles: the tile that holds it). An object whose refined mask
comes out empty keeps its old pixels. Each result is kept cropped to its own box, so memory follows the objects'
sizes, not the image's.

Positions are (row, col) in the image's data pixels; the labels plane is on the image's grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import SegmentationCancelled
from ..objects import cropped
from ..predictor import Predictor
from ..settings import RefineSettings

#: Objects decoded in one batched call.
BATCH = 16


@dataclass
class RefinedObject:
    """One object after refinement.

    Attributes:
        object_id: its label id (unchanged).
        rows, cols: the slices of the image its mask covers; mask: (rows, cols) bool, cropped to them.
        score: SAM's predicted IoU (NaN for an object that kept its old pixels).
        refined: False when SAM's mask was empty and the old pixels were kept.
    """

    object_id: int
    rows: slice
    cols: slice
    mask: np.ndarray
    score: float
    refined: bool

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def _batches(predictor: Predictor, ids: np.ndarray, slices: dict) -> list[tuple]:
    """``[(frame, ids), ...]``: the objects grouped by the frame their box is decoded in (on a tiled image, the
    tile or window that holds each box), at most :data:`BATCH` per decoder call."""
    groups: dict = {}
    for object_id in ids:
        rows, cols = slices[object_id]
        frame = predictor.frame_for(boxes=[[rows.start, cols.start, rows.stop - 1, cols.stop - 1]])
        groups.setdefault(frame, []).append(object_id)
    return [(frame, members[start: start + BATCH]) for frame, members in groups.items()
            for start in range(0, len(members), BATCH)]


@dataclass
class RefineResult:
    """Every object of a plane, refined (largest first, so painting in order keeps small objects visible)."""

    objects: list[RefinedObject]
    shape: tuple[int, int]

    @property
    def kept(self) -> list[int]:
        """Ids of the objects whose refinement was empty (their old pixels were kept)."""
        return [o.object_id for o in self.objects if not o.refined]

    def labels(self, dtype=np.uint32) -> np.ndarray:
        """(H, W) the refined objects painted into one plane, the largest first."""
        plane = np.zeros(self.shape, dtype=dtype)
        for obj in self.objects:
            plane[obj.rows, obj.cols][obj.mask] = obj.object_id
        return plane


def refine_objects(predictor: Predictor, image: np.ndarray, labels: np.ndarray,
                   settings: RefineSettings | None = None, *, contrast_limits=None, rgb: bool | None = None,
                   progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
                   **overrides) -> RefineResult:
    """Refine every object of ``labels`` (an (H, W) integer plane on ``image``'s grid) with SAM.

    Args:
        predictor: the model; its current image becomes ``image``.
        image: (H, W), (H, W, 3) or (H, W, 4), as for :meth:`Predictor.set_image`.
        labels: (H, W) integer array, 0 = background.
        settings: :class:`~napari_sam.core.settings.RefineSettings` (None: those the checkpoint recommends,
            ``predictor.recommended.refine``); ``overrides`` replace single settings by name.
        progress: ``progress(done, total)`` after each batch; cancel: checked between batches, returning True
            raises :class:`SegmentationCancelled`.

    Raises:
        ValueError: labels that are not an integer (H, W) array of the image's size.
    """
    settings = (settings or predictor.recommended.refine).replace(**overrides)
    labels = np.asarray(labels)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, got {labels.dtype}.")
    size = np.shape(image)[:2]
    if labels.shape != tuple(size):
        raise ValueError(f"labels have shape {labels.shape}, the image {tuple(size)}: they must match.")
    ids, compact = np.unique(labels, return_inverse=True)  # compact ids keep find_objects small
    slices = dict(zip(ids, ndimage.find_objects(compact.reshape(labels.shape) + 1)))
    ids = ids[ids != 0]
    refined: list[RefinedObject] = []
    with predictor.locked():
        if len(ids):
            predictor.set_image(image, contrast_limits=contrast_limits, rgb=rgb)
        batches = _batches(predictor, ids, slices)
        for number, (frame, batch) in enumerate(batches, start=1):
            if cancel is not None and cancel():
                raise SegmentationCancelled()
            boxes = [[s.start, c.start, s.stop - 1, c.stop - 1] for s, c in (slices[i] for i in batch)]
            olds = [(slices[i], labels[slices[i]] == i) for i in batch]
            mask_input = None
            if settings.use_mask_input:
                mask_input = np.concatenate([predictor.mask_logits(old, frame=frame, offset=(rows.start, cols.start))
                                             for (rows, cols), old in olds])
            prediction = predictor.predict(boxes=boxes, mask_input=mask_input, frame=frame)
            decoded = prediction.frame  # the frame may have grown around objects that reach its border
            best, scores = prediction.best_masks(), prediction.scores.max(axis=1)
            for object_id, new, ((rows, cols), old), score in zip(batch, best, olds, scores):
                found = cropped(new, decoded.row0, decoded.col0) or cropped(old, rows.start, cols.start)
                assert found is not None  # nothing from SAM: the object keeps its (non-empty) pixels
                refined.append(RefinedObject(int(object_id), found.rows, found.cols, found.mask,
                                             float(score) if new.any() else np.nan, bool(new.any())))
            if progress is not None:
                progress(number, len(batches))
    refined.sort(key=lambda o: -o.area)
    return RefineResult(refined, tuple(size))
