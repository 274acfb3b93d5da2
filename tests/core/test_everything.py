"""Segment everything: equivalence with transformers' mask-generation pipeline, recovery of synthetic cells."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SamModel, pipeline
from transformers.models.sam import image_processing_pil_sam
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

from napari_sam import Predictor
from napari_sam.core.errors import SegmentationCancelled
from napari_sam.core.workflows import segment_everything
from napari_sam.demo import synthetic_cells


def greedy_nms(boxes, scores, threshold):
    """A plain greedy NMS, as torchvision's (written here independently of napari_sam's)."""
    order = torch.argsort(scores, descending=True).tolist()
    keep = []
    while order:
        best = order.pop(0)
        keep.append(best)
        rest = []
        for other in order:
            a, b = boxes[best].tolist(), boxes[other].tolist()
            width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            overlap = width * height
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
            if union <= 0 or overlap / union <= threshold:
                rest.append(other)
        order = rest
    return torch.tensor(keep, dtype=torch.long)


@pytest.mark.parametrize("block", [1, 7, 1 << 22])
def test_nms_in_blocks_is_greedy_nms(block, monkeypatch):
    """Our NMS, its IoU matrix computed in blocks of rows of any size, keeps exactly what a plain greedy NMS keeps,
    in the same order (clusters of overlapping boxes, a nested box, a duplicate, distinct scores)."""
    from napari_sam.core import boxes as box_ops

    monkeypatch.setattr(box_ops, "NMS_BLOCK", block)
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 200, (60, 2)).repeat(3, axis=0) + rng.normal(0, 4, (180, 2))
    sides = rng.uniform(8, 30, (180, 2))
    boxes = torch.tensor(np.c_[centres - sides / 2, centres + sides / 2], dtype=torch.float32)
    boxes = torch.cat([boxes, boxes[:1], torch.tensor([[0.0, 0.0, 300.0, 300.0]])])
    scores = torch.tensor(rng.permutation(len(boxes)) / len(boxes), dtype=torch.float32)
    for threshold in (0.3, 0.7):
        expected = greedy_nms(boxes, scores, threshold)
        assert 60 <= len(expected) < len(boxes)
        assert box_ops.nms(boxes, scores, threshold).tolist() == expected.tolist()


def torch_post_process(rle_masks, iou_scores, mask_boxes, amg_crops_nms_thresh=0.7):
    """The pipeline's post-processing with torchvision's batched_nms replaced by ``greedy_nms``."""
    keep = greedy_nms(mask_boxes.float(), iou_scores, amg_crops_nms_thresh)
    masks = [image_processing_pil_sam._rle_to_mask(rle_masks[i]) for i in keep]
    return masks, iou_scores[keep], [rle_masks[i] for i in keep], mask_boxes[keep]


def partner_rate(ours, theirs, threshold=0.9):
    """Fraction of masks on either side with a partner on the other side at IoU >= threshold."""
    if not len(ours) and not len(theirs):
        return 1.0
    a = torch.from_numpy(np.asarray(ours)).flatten(1).float()
    b = torch.from_numpy(np.asarray(theirs)).flatten(1).float()
    intersection = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - intersection
    iou = intersection / union.clamp(min=1)
    matched = (iou.max(dim=1).values >= threshold).sum() + (iou.max(dim=0).values >= threshold).sum()
    return float(matched) / (len(a) + len(b))


@pytest.mark.parametrize("crop_n_layers", [0, 1])
def test_matches_the_transformers_pipeline(transformers_pipeline, monkeypatch, crop_n_layers):
    monkeypatch.setattr(transformers_pipeline.image_processor, "post_process_for_mask_generation", torch_post_process)
    cells, _ = synthetic_cells((230, 300), seed=900_020)
    low, high = np.percentile(cells, [0.5, 99.5])
    gray = (np.clip((cells - low) / (high - low), 0, 1) * 255).round().astype(np.uint8)
    image = np.stack([gray] * 3, axis=-1)
    settings = {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.85, "stability_score_offset": 1.0}
    theirs = transformers_pipeline(Image.fromarray(image), points_per_batch=64, points_per_crop=8,
                       crops_n_layers=crop_n_layers, crops_nms_thresh=0.7, **settings)
    predictor = Predictor.from_pretrained("tiny-cells", device="cpu")
    # framed as the pipeline frames it: the whole image filling the input, whatever the checkpoint recommends
    predictor.geometry = dataclasses.replace(predictor.geometry, max_upscale=0.0, tile_scale=0.0)
    ours = segment_everything(predictor, image, method="grid", points_per_side=8, crop_n_layers=crop_n_layers,
                              min_mask_region_area=0, box_nms_thresh=0.7, crop_nms_thresh=0.7,
                              prefer_smaller_crops=False, **settings)
    assert len(ours.masks) >= 3 and len(theirs["masks"]) >= 3
    rate = partner_rate(ours.masks, np.stack(theirs["masks"]))
    assert rate >= 0.95, (rate, len(ours.masks), len(theirs["masks"]))
    if crop_n_layers:  # Meta's rule keeps the crop's version of some duplicates: the same objects still
        meta = segment_everything(predictor, image, method="grid", points_per_side=8, crop_n_layers=crop_n_layers,
                                  min_mask_region_area=0, **settings)
        assert len(meta.masks) == len(ours.masks)
        assert partner_rate(meta.masks, ours.masks, threshold=0.8) >= 0.95


def test_finds_the_synthetic_cells():
    predictor = Predictor.from_pretrained("tiny-cells", device="cpu")
    recovered, total = 0, 0
    for seed in (900_001, 900_002, 900_003):
        image, labels = synthetic_cells((256, 256), seed=seed)
        result = segment_everything(predictor, image, method="grid", points_per_side=16, pred_iou_thresh=0.8,
                                    stability_score_thresh=0.9)
        masks = torch.from_numpy(result.masks).flatten(1).float()
        for cell in range(1, int(labels.max()) + 1):
            target = torch.from_numpy(labels == cell).flatten().float()
            if target.sum() < 30:
                continue
            total += 1
            iou = (masks @ target) / (masks.sum(1) + target.sum() - masks @ target).clamp(min=1)
            recovered += bool(len(iou) and iou.max() >= 0.7)
    assert recovered >= 0.8 * total, (recovered, total)


def test_result_layout_progress_and_cancel():
    predictor = Predictor.from_pretrained("tiny-cells", device="cpu")
    image, _ = synthetic_cells((180, 220), seed=900_010)
    calls = []
    result = segment_everything(predictor, image, method="grid", points_per_side=12, points_per_batch=40,
                                pred_iou_thresh=0.8, stability_score_thresh=0.9, min_mask_region_area=30,
                                progress=lambda done, total: calls.append((done, total)))
    n = len(result.masks)
    assert n > 5 and result.masks.shape == (n, 180, 220) and result.masks.dtype == bool
    assert result.scores.shape == result.stability_scores.shape == (n,)
    assert (np.diff(result.scores) <= 0).all()  # best first
    assert result.boxes.shape == (n, 4) and result.point_coords.shape == (n, 2)
    rows, cols = np.nonzero(result.masks[0])
    np.testing.assert_allclose(result.boxes[0], [rows.min(), cols.min(), rows.max(), cols.max()])
    assert result.labels.dtype == np.uint32 and result.labels.shape == (180, 220)
    smallest = int(np.argmin(result.masks.sum(axis=(1, 2))))
    assert (result.labels[result.masks[smallest]] == smallest + 1).mean() > 0.5  # small objects stay visible
    assert calls == [(i, 4) for i in range(1, 5)]  # 144 points in batches of 40
    with pytest.raises(SegmentationCancelled):
        segment_everything(predictor, image, method="grid", points_per_side=12, points_per_batch=40,
                           cancel=lambda: len(calls) > 5, progress=lambda d, t: calls.append(d))


def test_thresholds_of_zero_turn_the_filters_off_as_in_the_pipeline(pessimistic_checkpoint, monkeypatch):
    """With every predicted IoU negative, thresholds of 0 (off, in Meta's generator and the pipeline) keep the
    masks on both sides; the grid decoder must not skip any point either."""
    from helpers import tiny_cells_input_size

    side = tiny_cells_input_size()
    processor = SamImageProcessorPil(size={"longest_edge": side}, pad_size={"height": side, "width": side})
    reference = pipeline("mask-generation", model=SamModel.from_pretrained(str(pessimistic_checkpoint)),
                         image_processor=processor, device="cpu")
    monkeypatch.setattr(reference.image_processor, "post_process_for_mask_generation", torch_post_process)
    cells, _ = synthetic_cells((200, 240), seed=900_030)
    low, high = np.percentile(cells, [0.5, 99.5])
    gray = (np.clip((cells - low) / (high - low), 0, 1) * 255).round().astype(np.uint8)
    image = np.stack([gray] * 3, axis=-1)
    predictor = Predictor.from_pretrained(str(pessimistic_checkpoint), device="cpu")
    predictor.set_image(image)
    assert (predictor.predict(points=[[100, 120]]).scores < 0).all()
    theirs = reference(Image.fromarray(image), points_per_batch=64, points_per_crop=8, pred_iou_thresh=0.0,
                       stability_score_thresh=0.0, crops_nms_thresh=0.7)
    ours = segment_everything(predictor, image, method="grid", points_per_side=8, pred_iou_thresh=0.0,
                              stability_score_thresh=0.0, box_nms_thresh=0.7, prefer_smaller_crops=False)
    theirs = np.stack(theirs["masks"])
    theirs = theirs[theirs.any(axis=(1, 2))]  # the pipeline keeps empty masks (all-zero boxes); they are no objects
    assert len(theirs) >= 3 and len(ours.masks) >= 3 and ours.masks.any(axis=(1, 2)).all()
    assert partner_rate(ours.masks, theirs) >= 0.95
    assert (ours.scores < 0).all()


def test_each_crop_is_encoded_exactly_once():
    """21 crops (two crop layers) with a cache of 8 embeddings: the final upsampling needs no encoder run."""
    from napari_sam import EmbeddingCache

    predictor = Predictor.from_pretrained("tiny-cells", device="cpu", cache=EmbeddingCache(max_items=8))
    runs = []
    predictor.model.vision_encoder.register_forward_hook(lambda *args: runs.append(1))
    image, _ = synthetic_cells((200, 240), seed=900_031)
    result = segment_everything(predictor, image, method="grid", points_per_side=8, crop_n_layers=2,
                                pred_iou_thresh=0.7, stability_score_thresh=0.8)
    assert len(result.masks) > 0
    assert len(runs) == 21


@pytest.mark.parametrize("bad", [dict(points_per_side=0), dict(points_per_batch=0),
                                 dict(crop_n_points_downscale_factor=0), dict(crop_n_layers=-1),
                                 dict(points_per_side=4, crop_n_layers=1, crop_n_points_downscale_factor=8),
                                 dict(pred_iou_thresh=float("nan")), dict(no_such_setting=1)])
def test_bad_settings_name_the_problem(bad):
    predictor = Predictor.from_pretrained("tiny-cells", device="cpu")
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name if name != "points_per_side" or len(bad) == 1 else "crop layer 1"):
        segment_everything(predictor, np.zeros((40, 40), np.uint8), method="grid", **bad)


def test_a_flat_image_without_limits_finds_nothing_without_an_error():
    predictor = Predictor.from_pretrained("tiny-cells", device="cpu")
    result = segment_everything(predictor, np.full((64, 80), 1000, dtype=np.uint16), method="grid", points_per_side=4)
    assert result.labels.shape == (64, 80) and result.labels.dtype == np.uint32


def test_without_settings_the_checkpoints_recommendations_hold():
    from napari_sam.core.settings import EverythingSettings

    predictor = Predictor.from_pretrained("tiny-cells", device="cpu")
    image, _ = synthetic_cells((180, 220), seed=900_010)
    assert predictor.recommended.everything.method == "instances"  # tiny-cells has an instance head
    assert segment_everything(predictor, image, method="grid").stats["candidates"] == 32 * 32 * 3  # its grid
    coarse = EverythingSettings(points_per_side=6, pred_iou_thresh=0.5, stability_score_thresh=0.5)
    predictor.recommended = dataclasses.replace(predictor.recommended, everything=coarse)
    result = segment_everything(predictor, image)
    assert result.stats["candidates"] == 6 * 6 * 3
    assert np.array_equal(result.labels, segment_everything(predictor, image, coarse).labels)
    assert segment_everything(predictor, image, EverythingSettings()).stats["candidates"] == 32 * 32 * 3


def test_settings_object_and_features():
    from napari_sam.core.settings import EverythingSettings

    predictor = Predictor.from_pretrained("tiny-cells", device="cpu")
    image, _ = synthetic_cells((180, 220), seed=900_010)
    settings = EverythingSettings(points_per_side=12, pred_iou_thresh=0.8, stability_score_thresh=0.9,
                                  min_mask_region_area=predictor.recommended.everything.min_mask_region_area)
    result = segment_everything(predictor, image, settings)
    # keywords replace single settings of those the checkpoint recommends
    same = segment_everything(predictor, image, method="grid", points_per_side=12, pred_iou_thresh=0.8,
                              stability_score_thresh=0.9)
    assert np.array_equal(result.labels, same.labels)
    features = result.features()
    assert list(features["label"]) == list(range(1, len(result.masks) + 1))
    assert np.array_equal(features["area"], result.masks.sum(axis=(1, 2)))


def test_small_regions_are_cleaned_inside_the_object_only():
    """Meta's clean-up of one object (holes filled, islands removed) never takes the background around it for a hole:
    a 17 x 17 disk with a 200-px threshold stays the disk (it once became a filled 19 x 19 square), and an object at
    the image's border stays inside the image (its crop once started at -1)."""
    from napari_sam.core.objects import MaskObject, cleaned

    rows, cols = np.mgrid[:17, :17]
    disk = (rows - 8) ** 2 + (cols - 8) ** 2 <= 64
    inside = MaskObject(slice(40, 57), slice(40, 57), disk)
    assert cleaned(inside, 200, (100, 100)) == (inside, False)
    holed = disk.copy()
    holed[7:10, 7:10] = False  # a 9-px hole
    holed[0, 0] = True  # a 1-px island
    kept, changed = cleaned(MaskObject(slice(40, 57), slice(40, 57), holed), 200, (100, 100))
    assert changed and np.array_equal(kept.full((100, 100)), inside.full((100, 100)))
    for corner in ((0, 0), (83, 83)):
        obj = MaskObject(slice(corner[0], corner[0] + 17), slice(corner[1], corner[1] + 17), disk)
        kept, _ = cleaned(obj, 200, (100, 100))
        assert (kept.rows.start, kept.cols.start, kept.rows.stop, kept.cols.stop) == (*corner, *np.add(corner, 17))
        assert kept.mask[disk].all()  # only what the object encloses with the image's border is added


def test_a_large_clean_up_threshold_keeps_cells_round_and_paints_those_at_the_border(tiny_cells):
    """Segment everything with ``min_mask_region_area`` 300 on cells of 8-14 px radius (whose box holds less than 300
    px of background): no object becomes its filled box, and cells cut by the image's border are painted (this image
    once raised IndexError)."""
    from napari_sam.testing.held_out import matched

    image, labels = synthetic_cells((200, 240), seed=900_040, radius_range=(8.0, 14.0))
    settings = dict(points_per_side=16, pred_iou_thresh=0.7, stability_score_thresh=0.85)
    plain = segment_everything(tiny_cells, image, method="grid", min_mask_region_area=0, **settings)
    result = segment_everything(tiny_cells, image, method="grid", min_mask_region_area=300, **settings)
    cells, found_plain = matched(labels, np.asarray(plain.labels))[:2]
    found = matched(labels, np.asarray(result.labels))[1]
    assert found >= found_plain - 1 and found >= 0.8 * cells, (cells, found_plain, found)
    at_border = [obj for obj in result.objects if obj.rows.start == 0 or obj.cols.start == 0
                 or obj.rows.stop == 200 or obj.cols.stop == 240]
    assert at_border and all(obj.rows.start >= 0 and obj.cols.start >= 0 for obj in result.objects)
    for obj in result.objects:
        assert obj.area < 0.95 * obj.mask.size, obj.box  # cells are round: a filled box is not one
    painted = np.asarray(result.labels)
    assert all(np.count_nonzero(painted == k + 1) > 0 for k in range(len(result.objects)))
