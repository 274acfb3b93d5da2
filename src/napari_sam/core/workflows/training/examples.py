"""What a model is fine-tuned on: the user's images with their labels, checked, plane by plane, split into training
and validation, and seen as the model sees them at inference (the same frames: the whole image or its tiles).

Positions are (row, col) in data pixels; labels are instance ids (0 background).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ...image import Frame
from ...predictor import Predictor

#: Objects smaller than this many pixels are left out of training and validation (a few pixels at a border).
MIN_OBJECT_PIXELS = 12


@dataclass(frozen=True)
class AnnotatedImage:
    """One image (a plane: (H, W) gray or (H, W, 3|4) colour) and its labels (H, W), as the user annotated it.

    Attributes:
        name: what messages and the model card call it (a file name, a layer's name; planes add ``[z=k]``).
        contrast_limits: as napari shows the image (None: robust percentiles, as :meth:`Predictor.set_image`).
        ignore: ids present in ``labels`` that are neither trained on nor counted (another split's objects).
    """

    image: np.ndarray
    labels: np.ndarray
    name: str
    contrast_limits: tuple[float, float] | None = None
    ignore: frozenset[int] = field(default_factory=frozenset)

    @property
    def ids(self) -> list[int]:
        """The ids of the objects counted (at least :data:`MIN_OBJECT_PIXELS`), ascending."""
        ids, counts = np.unique(self.labels, return_counts=True)
        return [int(i) for i, n in zip(ids, counts) if i > 0 and n >= MIN_OBJECT_PIXELS and int(i) not in self.ignore]


def annotated_planes(image, labels, name: str, contrast_limits=None, rgb: bool | None = None) -> list[AnnotatedImage]:
    """``image`` and ``labels`` checked and cut into the planes that hold objects: a stack counts plane by plane.

    ``image`` is (H, W), (H, W, 3|4) colour, or a stack of either with leading axes; ``labels`` has the image's
    shape without its colour axis.

    Raises:
        ValueError: labels that are not integers, or whose shape differs from the image's (both named).
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: the labels must be integer ids (0 background), not {labels.dtype}.")
    colour = rgb if rgb is not None else (image.ndim == labels.ndim + 1 and image.shape[-1] in (3, 4))
    spatial = image.shape[:-1] if colour else image.shape
    if tuple(spatial) != tuple(labels.shape):
        raise ValueError(f"{name}: the labels' shape {tuple(labels.shape)} differs from the image's {tuple(spatial)}"
                         f"{' (without its colour axis)' if colour else ''}.")
    if labels.ndim < 2:
        raise ValueError(f"{name}: an image to train on needs at least 2 dimensions, not {labels.ndim}.")
    if (labels < 0).any():
        raise ValueError(f"{name}: the labels hold negative ids; ids are 0 (background) and up.")
    if labels.ndim == 2:
        return [AnnotatedImage(image, labels, name, contrast_limits)]
    out = []
    for index in np.ndindex(*labels.shape[:-2]):
        plane = labels[index]
        if plane.any():
            where = ",".join(str(i) for i in index)
            out.append(AnnotatedImage(image[index], plane, f"{name}[{where}]", contrast_limits))
    return out


@dataclass(frozen=True)
class Split:
    """The images trained on and those validated on, and how they were split (``"images"`` or ``"objects"``)."""

    training: list[AnnotatedImage]
    validation: list[AnnotatedImage]
    by: str

    def summary(self) -> dict:
        return {"split": self.by, "training_images": len(self.training),
                "training_objects": sum(len(a.ids) for a in self.training),
                "validation_images": len(self.validation),
                "validation_objects": sum(len(a.ids) for a in self.validation)}


def split(annotated: list[AnnotatedImage], fraction: float, seed: int) -> Split:
    """Hold out a share ``fraction`` of the images (at least one) to validate on; with one image, a share of its
    objects instead (the others' ids are ignored in each part).

    Raises:
        ValueError: no objects at all, or a single object (nothing to validate on).
    """
    annotated = [a for a in annotated if a.ids]
    total = sum(len(a.ids) for a in annotated)
    if total == 0:
        raise ValueError("The labels hold no objects (of at least "
                         f"{MIN_OBJECT_PIXELS} pixels) to train on: annotate some objects first.")
    if total == 1:
        raise ValueError("The labels hold one object: training needs at least two, one to learn from and one to "
                         "validate on (annotate more objects).")
    rng = np.random.default_rng(seed)
    if len(annotated) == 1:
        only = annotated[0]
        ids = np.array(only.ids)
        held = set(int(i) for i in rng.choice(ids, size=max(1, round(fraction * len(ids))), replace=False))
        kept = set(int(i) for i in ids) - held
        return Split([AnnotatedImage(only.image, only.labels, only.name, only.contrast_limits, frozenset(held))],
                     [AnnotatedImage(only.image, only.labels, only.name, only.contrast_limits, frozenset(kept))],
                     "objects")
    order = rng.permutation(len(annotated))
    count = min(len(annotated) - 1, max(1, round(fraction * len(annotated))))
    validation = [annotated[i] for i in sorted(order[:count])]
    training = [annotated[i] for i in sorted(order[count:])]
    return Split(training, validation, "images")


@dataclass
class TrainingFrame:
    """One frame of an annotated image as the model sees it (see :meth:`Predictor.frames`).

    Attributes:
        labels: (pad_h, pad_w) int64 labels in the padded model input; -1 where nothing is learnt (padding,
            ignored objects, objects the frame cuts, which another frame holds whole).
        features: (embedding, extras) from the frozen encoder, detached; None until embedded.
        pixels: (1, 3, S, S) model input, for training the encoder; None otherwise.
        frame: the region of the image; name: the image's name.
    """

    labels: torch.Tensor
    frame: Frame
    name: str
    features: tuple[torch.Tensor, tuple] | None = None
    pixels: torch.Tensor | None = None


@dataclass(frozen=True)
class ObjectIndex:
    """What :func:`frame_labels` needs to know of a whole image's labels, computed once for all its frames: the ids
    too small to learn from, and every object's bounding slices (``scipy.ndimage.find_objects``)."""

    small: frozenset[int]
    slices: list

    @classmethod
    def of(cls, labels: np.ndarray) -> ObjectIndex:
        from scipy import ndimage

        ids, counts = np.unique(labels, return_counts=True)
        return cls(frozenset(int(i) for i, n in zip(ids, counts) if i > 0 and n < MIN_OBJECT_PIXELS),
                   ndimage.find_objects(np.asarray(labels)))


def frame_labels(labels: np.ndarray, frame: Frame, input_size: tuple[int, int], pad_size: tuple[int, int],
                 ignore: frozenset[int] = frozenset(), index: ObjectIndex | None = None) -> torch.Tensor:
    """``labels`` (the whole image's) in ``frame``'s model input: resized (nearest) to ``input_size``, padded to
    ``pad_size`` with -1; objects in ``ignore``, smaller than :data:`MIN_OBJECT_PIXELS` or not held whole by the
    frame are -1 too. ``index``: :meth:`ObjectIndex.of` the labels, when several frames of them are wanted."""
    region = np.asarray(labels[frame.slices]).astype(np.int64)
    index = index or ObjectIndex.of(labels)
    unwanted = set(int(i) for i in ignore) | set(index.small)
    if frame.size != tuple(labels.shape):  # a tile: objects it cuts are learnt from the tile that holds them
        present = set(np.unique(region).tolist())
        for index_id, where in enumerate(index.slices, start=1):
            if where is None or index_id not in present:
                continue
            inside = (where[0].start >= frame.row0 and where[0].stop <= frame.row1 and where[1].start >= frame.col0
                      and where[1].stop <= frame.col1)
            if not inside:
                unwanted.add(index_id)
    if unwanted:
        region = np.where(np.isin(region, sorted(unwanted)), -1, region)
    resized = F.interpolate(torch.from_numpy(region)[None, None].float(), size=input_size, mode="nearest")[0, 0]
    out = torch.full(pad_size, -1, dtype=torch.int64)
    out[: input_size[0], : input_size[1]] = resized.long()
    return out


def training_frames(predictor: Predictor, annotated: list[AnnotatedImage], pixels: bool = False,
                    progress=None, features: bool | None = None, empty: bool = False) -> list[TrainingFrame]:
    """Every frame of every image that holds an object to learn from (with ``empty``, also those that hold only
    background: an instance head learns from them that there is nothing there), with its image features from the
    predictor (its memory cache, its store on disk, else the encoder; so an image embedded before is not encoded
    again) and, with ``pixels``, its model input (for training the encoder, which needs no features: ``features``
    defaults to ``not pixels``). ``progress(done, total)`` after each image."""
    geometry = predictor.geometry
    features = not pixels if features is None else features
    out = []
    for done, item in enumerate(annotated, start=1):
        plan = predictor.plan(item.image, item.contrast_limits)
        index = ObjectIndex.of(item.labels)
        for frame in predictor.frames(plan=plan):
            labels = frame_labels(item.labels, frame, geometry.input_size(frame), geometry.pad_size, item.ignore,
                                  index)
            if not (labels > 0).any() and not (empty and (labels == 0).any()):
                continue
            entry = TrainingFrame(labels, frame, item.name)
            if pixels:
                entry.pixels = predictor.frame_input(frame, plan)
            if features:
                embedded, _ = predictor.frame_embedding(frame, plan)
                entry.features = (embedded.embedding.clone(), tuple(t.clone() for t in embedded.extras))
            out.append(entry)
        if progress is not None:
            progress(done, len(annotated))
    return out
