"""Automatic instance segmentation with a checkpoint's instance head
(:mod:`~napari_sam.core.decoding.instance_head`): what the head learns, and how its maps become objects.

- :func:`instance_targets`: the three maps the head learns from labels: foreground, the distance to each object's
  centre and the distance to its boundary, each normalised within its object (as micro-sam's automatic instance
  segmentation learns them);
- :func:`frame_maps`: the head's maps of one frame of the predictor's image, at the frame's pixels;
- :func:`split_instances`: objects from the maps by seeded watershed: seeds are the pixels near a centre and far from
  a boundary, grown over the foreground;
- :func:`frame_instances`: one frame's objects, each with a score (its mean foreground probability) and a point
  (its deepest pixel); :func:`refined_by_sam`: the same objects as box and point prompts to SAM's decoder, in
  batched calls, redrawn and scored by it.

Segment everything's ``instances`` and ``instances+sam`` methods run these frame by frame
(:mod:`~napari_sam.core.workflows.everything` merges the frames, as for the grid). Positions are (row, col).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..decoding import head_extras
from ..image import Frame, ImagePlan
from ..objects import MaskObject, cropped
from ..predictor import Predictor
from ..settings import EverythingSettings

#: Objects refined by SAM's decoder per call (bounds the memory of their full-resolution masks).
REFINE_BATCH = 64
#: instances+sam keeps SAM's mask of an object when it overlaps the head's by at least this IoU (else the head's).
AGREEMENT = 0.5

__all__ = ["FrameInstances", "frame_instances", "frame_maps", "instance_targets", "refined_by_sam", "split_instances"]


def instance_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The head's targets for ``labels`` ((H, W) instance ids; 0 background, -1 unknown): ``(maps (3, H, W) float32,
    known (H, W) bool)``. The maps are foreground (0/1), the distance to the object's centre (its deepest pixel;
    0 there, 1 at its farthest pixel) and the distance to its boundary (1 at its deepest pixel, falling to 0 outside
    it); ``known`` is False where labels are -1."""
    labels = np.asarray(labels)
    maps = np.zeros((3, *labels.shape), np.float32)
    maps[0] = labels > 0
    for index, where in enumerate(ndimage.find_objects(np.clip(labels, 0, None).astype(np.int64)), start=1):
        if where is None:
            continue
        rows = slice(max(0, where[0].start - 1), where[0].stop + 1)
        cols = slice(max(0, where[1].start - 1), where[1].stop + 1)
        inside = labels[rows, cols] == index
        inner = ndimage.distance_transform_edt(inside)
        deepest = np.unravel_index(int(np.argmax(inner)), inner.shape)
        grid_r, grid_c = np.indices(inside.shape)
        centre = np.hypot(grid_r - deepest[0], grid_c - deepest[1])
        centre_max, inner_max = float(centre[inside].max()), float(inner.max())
        maps[1, rows, cols][inside] = centre[inside] / centre_max if centre_max > 0 else 0.0
        maps[2, rows, cols][inside] = inner[inside] / inner_max if inner_max > 0 else 1.0
    return maps, labels >= 0


def frame_maps(predictor: Predictor, frame: Frame, plan: ImagePlan | None = None) -> np.ndarray:
    """The instance head's maps of ``frame`` of an image (default: the predictor's current one) at the frame's
    pixels: (3, h, w) float32 foreground probability, centre distance and boundary distance. The frame's embedding
    comes from the predictor (its cache, its store, else the encoder)."""
    head = predictor.instance_head()
    geometry = predictor.geometry
    embedded, _ = predictor.frame_embedding(frame, plan)
    pixels = predictor.frame_input(frame, plan).to(predictor.device)
    embedding = embedded.embedding.to(predictor.device, torch.float32)
    extras = tuple(t.to(predictor.device, torch.float32) for t in head_extras(embedded.extras, embedded.embedding))
    with torch.inference_mode():
        maps = head(embedding, extras, pixels)[0].float()
        maps[0] = torch.sigmoid(maps[0])
        pad_h, pad_w = geometry.pad_size
        in_h, in_w = geometry.input_size(frame)
        rows, cols = -(-in_h * maps.shape[1] // pad_h), -(-in_w * maps.shape[2] // pad_w)
        valid = maps[None, :, :rows, :cols]
        out = torch.nn.functional.interpolate(valid, size=frame.size, mode="bilinear", align_corners=False)[0]
    return out.cpu().numpy()


def split_instances(maps: np.ndarray, settings: EverythingSettings) -> np.ndarray:
    """(h, w) int32 instance labels from ``maps`` (:func:`frame_maps`): seeds where the centre distance is below
    ``settings.center_distance_thresh`` and the boundary distance above ``settings.boundary_distance_thresh``,
    grown by watershed over the pixels whose foreground probability is above ``settings.foreground_thresh``;
    seeds under ``settings.min_seed_area`` pixels are dropped first (a second seed in one object would split it),
    objects under ``settings.min_instance_area`` pixels last."""
    from skimage.segmentation import watershed

    foreground = maps[0] > settings.foreground_thresh
    seeds = foreground & (maps[1] < settings.center_distance_thresh) & (maps[2] > settings.boundary_distance_thresh)
    markers, count = ndimage.label(seeds)
    if count and settings.min_seed_area > 1:
        small = np.nonzero(np.bincount(markers.ravel()) < settings.min_seed_area)[0]
        markers[np.isin(markers, small[small > 0])] = 0
    if not markers.any():
        return np.zeros(maps.shape[1:], np.int32)
    labels = watershed(-maps[2], markers=markers, mask=foreground).astype(np.int32)
    if settings.min_instance_area > 0:
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        small = np.nonzero(areas < settings.min_instance_area)[0]
        if len(small):
            labels[np.isin(labels, small[small > 0])] = 0
    return labels


@dataclass
class FrameInstances:
    """Objects of one frame, in image pixels: ``objects``, their ``scores`` (n,), and ``points`` (n, 2) (row, col) of
    their deepest pixels."""

    objects: list[MaskObject]
    scores: np.ndarray
    points: np.ndarray


def frame_instances(predictor: Predictor, frame: Frame, settings: EverythingSettings,
                    plan: ImagePlan | None = None) -> FrameInstances:
    """The instance head's objects in ``frame`` (see :func:`frame_maps` and :func:`split_instances`); each scored by
    its mean foreground probability."""
    maps = frame_maps(predictor, frame, plan)
    labels = split_instances(maps, settings)
    objects, scores, points = [], [], []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is None:
            continue
        inside = labels[where] == index
        obj = cropped(inside, frame.row0 + where[0].start, frame.col0 + where[1].start)
        if obj is None:
            continue
        depth = np.where(inside, maps[2][where], -1.0)
        row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
        objects.append(obj)
        scores.append(float(maps[0][where][inside].mean()))
        points.append((frame.row0 + where[0].start + row, frame.col0 + where[1].start + col))
    return FrameInstances(objects, np.asarray(scores, np.float32), np.asarray(points, np.float32).reshape(-1, 2))


def refined_by_sam(predictor: Predictor, frame: Frame, found: FrameInstances) -> FrameInstances:
    """``found`` (objects of ``frame`` of the predictor's current image) redrawn by SAM's mask decoder from each
    one's box and deepest point, :data:`REFINE_BATCH` objects a call, in the same frame. SAM's mask and predicted IoU
    replace the head's where they agree (IoU of at least :data:`AGREEMENT`); elsewhere the head's object stays,
    with its score."""
    objects, scores = list(found.objects), found.scores.copy()
    for start in range(0, len(objects), REFINE_BATCH):
        part = range(start, min(start + REFINE_BATCH, len(objects)))
        boxes = np.array([objects[i].box for i in part], np.float32)
        points = found.points[start: part.stop][:, None, :]
        prediction = predictor.predict(points=points, boxes=boxes, multimask=False, frame=frame, grow=False)
        window = prediction.frame
        for offset, index in enumerate(part):
            redrawn = cropped(prediction.masks[offset, 0], window.row0, window.col0)
            if redrawn is not None and _iou(redrawn, objects[index]) >= AGREEMENT:
                objects[index] = redrawn
                scores[index] = float(prediction.scores[offset, 0])
    return FrameInstances(objects, scores, found.points)


def _iou(a: MaskObject, b: MaskObject) -> float:
    """IoU of two objects (each a mask cropped to its box)."""
    row0, col0 = min(a.rows.start, b.rows.start), min(a.cols.start, b.cols.start)
    row1, col1 = max(a.rows.stop, b.rows.stop), max(a.cols.stop, b.cols.stop)
    canvas = np.zeros((2, row1 - row0, col1 - col0), bool)
    for layer, obj in enumerate((a, b)):
        canvas[layer, obj.rows.start - row0: obj.rows.stop - row0, obj.cols.start - col0: obj.cols.stop - col0] = \
            obj.mask
    union = np.logical_or(canvas[0], canvas[1]).sum()
    return float(np.logical_and(canvas[0], canvas[1]).sum() / union) if union else 0.0
