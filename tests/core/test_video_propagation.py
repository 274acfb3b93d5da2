"""Propagation with SAM2-family video models (core, no Qt), on tiny randomised Sam2VideoModel/EdgeTamVideoModel.

Random weights make the masks meaningless, so results are compared with the model itself: with transformers' own
inference session fed the whole stack, and with the model run on the prompted frame alone.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sam.core.errors import ModelLoadError, SegmentationCancelled
from napari_sam.core.image import default_contrast_limits
from napari_sam.core.model import VideoGeometry, is_video_checkpoint, load_video_model
from napari_sam.core.objects import mask_iou
from napari_sam.core.workflows.propagation.video import propagate_video, propagate_video_objects, slice_input
from napari_sam.demo import synthetic_cells
from napari_sam.testing.random_weights import random_video_model, tiny_sam_config, tiny_video_config

from helpers import OnePlaneVolume

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64  # model input side; the slices are 70 x 90


def recording(video_model, monkeypatch):
    """Record every frame the model segments: a list of (frame_idx, session, output) in call order."""
    calls, forward = [], video_model.forward

    def record(inference_session, frame_idx=None, **kwargs):
        output = forward(inference_session, frame_idx=frame_idx, **kwargs)
        calls.append((frame_idx, inference_session, output))
        return output

    monkeypatch.setattr(video_model, "forward", record)
    return calls


def stock_session(frames, frame_idx, point_coords, point_labels, shape=(70, 90), session_class=None):
    """transformers' own session holding all ``frames``, prompted on ``frame_idx`` with (x, y) model points."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    session = (session_class or Sam2VideoInferenceSession)(
        video=frames, video_height=shape[0], video_width=shape[1],
        dtype=torch.float32)  # the default dtype, the string "float32", breaks the frames' .to()
    session.add_point_inputs(session.obj_id_to_idx(1), frame_idx, {
        "point_coords": torch.tensor(point_coords, dtype=torch.float32)[None, None],
        "point_labels": torch.tensor(point_labels, dtype=torch.int32)[None, None]})
    session.obj_with_new_inputs = [1]
    return session


def stack_frames(volume, start):
    """All slices as model frames, prepared with the start slice's default contrast limits (propagate_video's)."""
    limits = default_contrast_limits(volume[start], False)
    return torch.stack([slice_input(image, VideoGeometry((SIZE, SIZE)), limits) for image in volume])


def to_mask(output, shape=(70, 90)):
    """The post-processed mask of a video output: low-res logits resized bilinearly to ``shape``, above 0."""
    logits = F.interpolate(output.pred_masks.float(), size=shape, mode="bilinear", align_corners=False)
    return (logits[0, 0] > 0).numpy()


def xy(row, col, shape=(70, 90)):
    """(row, col) in a 70 x 90 slice as (x, y) in the model's square input, as transformers' processor maps it."""
    return [col * SIZE / shape[1], row * SIZE / shape[0]]


def test_propagates_through_a_non_square_stack(video_model, video_stack):
    volume, _, point = video_stack
    calls = []
    result = propagate_video(video_model, volume, 5, 0, points=[point], progress=lambda d, t: calls.append((d, t)))
    assert result.masks.shape == (16, 70, 90) and result.masks.dtype == bool
    assert result.scores.shape == (16,) and result.scores.dtype == np.float32
    assert 0 <= result.start <= 5 <= result.stop < 16 and result.masks[5].any()
    kept = np.zeros(16, dtype=bool)
    kept[result.start:result.stop + 1] = True
    assert np.isfinite(result.scores[kept]).all() and np.isnan(result.scores[~kept]).all()
    assert not result.masks[~kept].any() and result.masks[kept].any(axis=(1, 2)).all()
    assert calls[-1] == (16, 16) and all(t == 16 for _, t in calls)
    assert [d for d, _ in calls[:-1]] == list(range(1, len(calls)))


@pytest.mark.parametrize("start", [3, 12])
def test_matches_transformers_own_session(video_model, video_stack, monkeypatch, start):
    """Forward then backward from the start slice, same masks as the stock session with the whole stack in memory,
    and the start slice as the model segments that frame alone. Starting at 3 and 12 makes the propagation forget
    old slices in either direction (memory of 3 frames, pointers of 4), which must not change anything."""
    volume, _, point = video_stack
    calls, kept = recording(video_model, monkeypatch), []
    result = propagate_video(video_model, volume, start, 0, points=[point], score_threshold=0.0, iou_threshold=0.0,
                             min_area=0, max_regrowth=0.0, max_shift=0.0, on_slice=lambda i, m, s: kept.append(i))
    order = [start, *range(start + 1, 16), *range(start - 1, -1, -1)]
    assert [index for index, _, _ in calls] == order and kept == order
    session = calls[-1][1]
    assert len(session.output_dict_per_obj[0]["non_cond_frame_outputs"]) < 15  # old slices were forgotten
    assert (result.start, result.stop) == (0, 15)

    monkeypatch.undo()
    frames = stack_frames(volume, start)
    session = stock_session(frames, start, [xy(*point)], [1])
    stock = {start: video_model(session, frame_idx=start)}
    for reverse in (False, True):
        for output in video_model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse):
            stock.setdefault(output.frame_idx, output)
    for index in range(16):
        assert np.array_equal(result.masks[index], to_mask(stock[index])), index
        assert np.isclose(result.scores[index], torch.sigmoid(stock[index].object_score_logits).item(), atol=1e-6)

    alone = stock_session(frames[start:start + 1], 0, [xy(*point)], [1])
    assert np.array_equal(result.masks[start], to_mask(video_model(alone, frame_idx=0)))


def test_the_stack_axis_can_be_any_axis(video_model, video_stack):
    volume, _, point = video_stack
    along_z = propagate_video(video_model, volume, 5, 0, points=[point])
    for axis in (1, 2, -1):
        moved = propagate_video(video_model, np.moveaxis(volume, 0, axis), 5, axis, points=[point])
        assert np.array_equal(moved.masks, along_z.masks)
        assert np.array_equal(moved.scores, along_z.scores, equal_nan=True)
        assert (moved.start, moved.stop) == (along_z.start, along_z.stop)


@pytest.mark.parametrize("rule", ["score", "overlap", "area"])
def test_a_direction_stops_at_the_first_slice_without_the_object(video_model, video_stack, monkeypatch, rule):
    """Each direction keeps the slices before the first one whose object score, overlap with the previous slice
    (IoU) or mask area fails, and segments none beyond it. The limit is set from a free run so that both directions
    get cut."""
    volume, _, point = video_stack
    free = propagate_video(video_model, volume, 5, 0, points=[point], score_threshold=0.0, iou_threshold=0.0,
                           min_area=0, max_regrowth=0.0, max_shift=0.0)
    if rule == "overlap":  # each slice against its neighbour towards the start slice
        values = np.array([mask_iou(free.masks[i], free.masks[i - 1 if i > 5 else i + 1]) for i in range(16)])
    else:
        values = free.scores.astype(float) if rule == "score" else free.masks.sum(axis=(1, 2))
    # just above the larger of the two directions' minima, halfway to the next value: a clear margin either side,
    # so that rounding in another thread layout cannot move a slice across the limit
    floor = max(values[6:].min(), values[:5].min())
    above = np.sort(np.unique(values[np.r_[0:5, 6:16]]))
    above = above[above > floor]
    limit = float(floor + 1) if rule == "area" else float((floor + above[0]) / 2 if len(above) else floor + 1e-4)
    limits = dict(score_threshold=0.0, iou_threshold=0.0, min_area=0, max_regrowth=0.0, max_shift=0.0)
    limits[{"score": "score_threshold", "overlap": "iou_threshold", "area": "min_area"}[rule]] = limit
    calls = recording(video_model, monkeypatch)
    result = propagate_video(video_model, volume, 5, 0, points=[point], **limits)

    seen = {index: (to_mask(output), torch.sigmoid(output.object_score_logits).item()) for index, _, output in calls}
    indices = [index for index, _, _ in calls]
    forward, backward = [i for i in indices if i > 5], [i for i in indices if i < 5]
    assert indices == [5, *forward, *backward]
    assert forward == list(range(6, 6 + len(forward))) and backward == list(range(4, 4 - len(backward), -1))
    fails = {index: (mask.sum() < limits["min_area"] or score < limits["score_threshold"]
                     or mask_iou(mask, seen[index - 1 if index > 5 else index + 1][0]) < limits["iou_threshold"])
             for index, (mask, score) in seen.items() if index != 5}
    for direction in (forward, backward):
        assert fails[direction[-1]] and not any(fails[i] for i in direction[:-1])
    assert (result.start, result.stop) == (backward[-1] + 1, forward[-1] - 1)
    for index in range(16):
        if result.start <= index <= result.stop:
            assert np.array_equal(result.masks[index], seen[index][0]) and result.scores[index] == seen[index][1]
        else:
            assert not result.masks[index].any() and np.isnan(result.scores[index])


@pytest.mark.parametrize("directions, order", [((1,), [5, *range(6, 16)]), ((-1,), [5, 4, 3, 2, 1, 0])])
def test_one_direction_only(video_model, video_stack, monkeypatch, directions, order):
    """To re-propagate from a corrected slice away from the first one; the forward masks are the full run's."""
    volume, _, point = video_stack
    full = propagate_video(video_model, volume, 5, 0, points=[point], score_threshold=0.0, iou_threshold=0.0,
                           min_area=0, max_regrowth=0.0, max_shift=0.0)
    calls, progress = recording(video_model, monkeypatch), []
    result = propagate_video(video_model, volume, 5, 0, points=[point], score_threshold=0.0, iou_threshold=0.0,
                             min_area=0, max_regrowth=0.0, max_shift=0.0, directions=directions,
                             progress=lambda d, t: progress.append((d, t)))
    assert [index for index, _, _ in calls] == order and progress[-1] == (len(order), len(order))
    assert (result.start, result.stop) == (min(order), max(order))
    if directions == (1,):
        assert np.array_equal(result.masks, full.masks * (np.arange(16) >= 5)[:, None, None])
    with pytest.raises(ValueError, match="directions"):
        propagate_video(video_model, volume, 5, 0, points=[point], directions=(2,))


def test_an_object_absent_from_the_start_slice_is_not_propagated(video_stack, monkeypatch):
    volume, _, point = video_stack
    absent = random_video_model(object_bias=-5.0)
    calls = recording(absent, monkeypatch)
    result = propagate_video(absent, volume, 5, 0, points=[point])
    assert [index for index, _, _ in calls] == [5]
    assert (result.start, result.stop) == (5, 5) and not result.masks.any()
    assert result.scores[5] < 0.5 and np.isnan(np.delete(result.scores, 5)).all()


def test_cancel(video_model, video_stack):
    volume, _, point = video_stack
    with pytest.raises(SegmentationCancelled):
        propagate_video(video_model, volume, 5, 0, points=[point], cancel=lambda: True)
    asked, kept = [], []
    with pytest.raises(SegmentationCancelled):
        propagate_video(video_model, volume, 5, 0, points=[point], score_threshold=0.0, iou_threshold=0.0, min_area=0,
                        max_regrowth=0.0, max_shift=0.0,
                        cancel=lambda: asked.append(1) or len(asked) > 3, on_slice=lambda i, m, s: kept.append(i))
    assert kept == [5, 6, 7]


OFF = {"score_threshold": 0.0, "iou_threshold": 0.0, "min_area": 0, "max_regrowth": 0.0, "max_shift": 0.0}


def test_many_objects_share_one_session_one_encoder_run_per_slice(video_model):
    """Every object of a labels plane is tracked in one session: each slice encoded once for all of them, each
    object as it is alone, less the pixels another object holds (no pixel claimed twice)."""
    volume, labels = synthetic_cells((12, 70, 90), seed=3, ndim=3, n_cells=4)
    plane = labels[5].astype(np.uint32)
    ids = [int(i) for i in np.unique(plane) if i]
    assert len(ids) >= 3
    encoded = []
    hook = video_model.vision_encoder.register_forward_hook(lambda *args: encoded.append(1))
    try:
        result = propagate_video_objects(video_model, volume, 5, 0, plane, **OFF)
    finally:
        hook.remove()
    assert len(encoded) == 12 and result.labels.shape == (12, 70, 90) and result.labels.dtype == np.uint32
    assert np.array_equal(result.labels[5], plane)
    assert set(result.extents) == set(ids) and set(np.unique(result.labels)) <= {0, *ids}
    for object_id in ids:
        alone = propagate_video(video_model, volume, 5, 0, mask=plane == object_id, **OFF)
        together = result.labels == object_id
        assert not (together & ~alone.masks).any(), object_id  # nothing beyond what the object finds alone
        others = (result.labels > 0) & ~together
        assert np.array_equal(together | (alone.masks & others), alone.masks), object_id  # the rest is another's
        kept = np.isfinite(result.scores[object_id])  # an object whose every pixel another holds stops there
        assert kept[5] and np.allclose(result.scores[object_id][kept], alone.scores[kept], atol=1e-5), object_id


def test_many_objects_stop_on_their_own_with_their_bounds(video_model):
    volume, labels = synthetic_cells((12, 70, 90), seed=3, ndim=3, n_cells=4)
    plane = labels[5].astype(np.uint32)
    first, second = [int(i) for i in np.unique(plane) if i][:2]
    result = propagate_video_objects(video_model, volume, 5, 0, plane, ids=[first, second],
                                     bounds={first: (4, 7)}, **OFF)
    assert set(result.extents) == {first, second}
    assert result.extents[first] == (4, 7) and result.extents[second] == (0, 11)
    on = np.flatnonzero((result.labels == first).any(axis=(1, 2)))
    assert on.min() >= 4 and on.max() <= 7
    with pytest.raises(ValueError, match="shape"):
        propagate_video_objects(video_model, volume, 5, 0, plane[:10])
    with pytest.raises(ValueError, match="not on the start slice"):
        propagate_video_objects(video_model, volume, 5, 0, plane, ids=[99])


def test_box_mask_and_combined_prompts(video_model, video_stack):
    volume, cell, point = video_stack
    rows, cols = np.nonzero(cell)
    box = [rows.min(), cols.min(), rows.max(), cols.max()]
    frame = stack_frames(volume, 5)[5:6]
    corners = [xy(box[0], box[1]), xy(box[2], box[3])]
    for prompt, coords, labels in [
        (dict(box=box), corners, [2, 3]),
        (dict(box=box, points=[point, (2, 3)], point_labels=[1, 0]), [*corners, xy(*point), xy(2, 3)], [2, 3, 1, 0]),
    ]:
        result = propagate_video(video_model, volume, 5, 0, **prompt)
        assert result.masks.shape == (16, 70, 90)
        session = stock_session(frame, 0, coords, labels)
        assert np.array_equal(result.masks[5], to_mask(video_model(session, frame_idx=0)))
    by_mask = propagate_video(video_model, volume, 5, 0, mask=cell)
    assert np.array_equal(by_mask.masks[5], cell) and by_mask.scores[5] > 0.99
    assert by_mask.masks.shape == (16, 70, 90)


@pytest.mark.parametrize("arguments, message", [
    (dict(start_index=16), "outside"),
    (dict(start_index=-1), "outside"),
    (dict(points=None), "No prompt"),
    (dict(points=np.zeros((0, 2))), "No prompt"),
    (dict(points=[[1, 2, 3]]), "points"),
    (dict(point_labels=[2]), "point_labels"),
    (dict(point_labels=[1, 1]), "point_labels"),
    (dict(points=None, box=[10, 10, 5, 20]), "box"),
    (dict(mask=np.ones((70, 90), bool)), "either"),
    (dict(points=None, mask=np.zeros((70, 90), bool)), "empty"),
    (dict(points=None, mask=np.ones((90, 70), bool)), "shape"),
    # points and boxes are checked as Predictor.predict checks them
    (dict(points=[[75, 10]]), r"outside the 70x90 image"),
    (dict(points=[[10, -3]]), r"outside the 70x90 image"),
    (dict(points=[[np.nan, 10]]), "NaN"),
    (dict(points=None, box=[80, 10, 95, 40]), "outside the 70x90 image"),
    (dict(points=None, box=[-20, 5, -2, 30]), "outside the 70x90 image"),
    (dict(points=None, box=[-9, 5, 0, 30]), "no height or no width"),
    (dict(points=None, box=[10, 89, 20, 120]), "no height or no width"),
    (dict(points=None, box=[[10, 10, 20, 20], [30, 30, 40, 40]]), "one"),
    (dict(points=None, box=[10, 10, 20, 20], point_labels=[1]), "without points"),
    # the stack, the start slice, the limits and the settings
    (dict(start_index=1.5), "start_index must be an integer"),
    (dict(axis=1.5), "axis must be an integer"),
    (dict(axis=3), "axis 3 is out of range"),
    (dict(contrast_limits=5), "contrast_limits must be two numbers"),
    (dict(contrast_limits=(100, 100)), "low < high"),
    (dict(directions=-1), "directions"),
    (dict(score_treshold=0.5), "Unknown PropagationSettings setting"),
    (dict(settings=0.5), "settings must be a PropagationSettings"),
])
def test_bad_input_is_named(video_model, video_stack, arguments, message):
    volume, _, point = video_stack
    call = dict(start_index=5, axis=0, points=[point]) | arguments
    with pytest.raises(ValueError, match=message):
        propagate_video(video_model, volume, **call)


def test_a_box_reaching_out_of_the_image_is_clipped(video_model, video_stack):
    """As Predictor.predict does: the prompt is the box within the image."""
    volume, _, _ = video_stack
    outside = propagate_video(video_model, volume, 5, 0, box=[30, 50, 90, 120], score_threshold=0.0, directions=(1,),
                              max_regrowth=0.0, max_shift=0.0)
    inside = propagate_video(video_model, volume, 5, 0, box=[30, 50, 69, 89], score_threshold=0.0, directions=(1,),
                             max_regrowth=0.0, max_shift=0.0)
    assert np.array_equal(outside.masks, inside.masks) and np.array_equal(outside.scores, inside.scores,
                                                                          equal_nan=True)


@pytest.mark.parametrize("axis", [0, 2])
def test_reads_one_plane_at_a_time(video_model, video_stack, axis):
    """Each slice segmented is read once, as one plane, and never the whole volume: the default contrast limits
    come from the start slice alone."""
    volume, _, point = video_stack
    plain = propagate_video(video_model, volume, 5, 0, points=[point])
    wrapped = OnePlaneVolume(np.moveaxis(volume, 0, axis), axis)
    result = propagate_video(video_model, wrapped, 5, axis, points=[point])
    order = [5, *range(6, min(plain.stop + 2, 16)), *range(4, max(plain.start - 2, -1), -1)]
    assert wrapped.reads == order
    assert np.array_equal(result.masks, plain.masks) and (result.start, result.stop) == (plain.start, plain.stop)
    limits = default_contrast_limits(volume[5], False)
    assert limits != default_contrast_limits(volume, False)
    explicit = propagate_video(video_model, volume, 5, 0, points=[point], contrast_limits=limits)
    assert np.array_equal(explicit.masks, plain.masks) and np.array_equal(explicit.scores, plain.scores,
                                                                          equal_nan=True)


def test_frames_are_prepared_like_the_reference_processor():
    """Square resize without keeping the aspect ratio (as Meta's SAM2 and transformers do with Pillow/torchvision
    bilinear), then ImageNet normalisation; rows stay rows."""
    from PIL import Image

    rows, cols = np.mgrid[0:70, 0:90]
    image = np.stack([rows * 255 // 69, cols * 255 // 89, (rows + cols) % 256], axis=-1).astype(np.uint8)
    geometry = VideoGeometry((SIZE, SIZE))
    pixels = slice_input(image, geometry)
    assert pixels.shape == (3, SIZE, SIZE) and pixels.dtype == torch.float32
    reference = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.Resampling.BILINEAR)) / 255.0
    reference = (reference - np.array(geometry.mean)) / np.array(geometry.std)
    difference = np.abs(pixels.permute(1, 2, 0).numpy() - reference)
    assert np.median(difference) < 1e-6 and difference.max() < 1.01 / 255 / min(geometry.std)  # rounding only


def test_is_video_checkpoint(tmp_path):
    from transformers import SamConfig

    assert is_video_checkpoint(tiny_video_config()) and is_video_checkpoint(tiny_video_config("edgetam_video"))
    assert not is_video_checkpoint(tiny_sam_config())
    assert is_video_checkpoint({"model_type": "sam2_video"}) and not is_video_checkpoint({"model_type": "sam"})
    tiny_video_config().save_pretrained(tmp_path / "video")
    SamConfig().save_pretrained(tmp_path / "sam")
    assert is_video_checkpoint(tmp_path / "video") and is_video_checkpoint(str(tmp_path / "video"))
    assert not is_video_checkpoint(tmp_path / "sam") and not is_video_checkpoint(tmp_path / "missing")


def test_load_video_model(tmp_path):
    from transformers import Sam2Config, Sam2Model, SamConfig

    saved = random_video_model(seed=4)
    saved.save_pretrained(tmp_path / "video")
    (tmp_path / "video" / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3,
                                                                             "image_std": [0.25] * 3}))
    model, geometry, device = load_video_model(tmp_path / "video", device="cpu")
    assert type(model).__name__ == "Sam2VideoModel" and not model.training and device == torch.device("cpu")
    assert geometry == VideoGeometry((SIZE, SIZE), (0.5,) * 3, (0.25,) * 3)
    loaded = model.state_dict()
    assert all(torch.equal(value, loaded[name]) for name, value in saved.state_dict().items())

    SamConfig().save_pretrained(tmp_path / "sam")
    with pytest.raises(ModelLoadError, match="not a SAM2-family"):
        load_video_model(tmp_path / "sam", device="cpu")
    video = tiny_video_config()
    image_only = Sam2Config(vision_config=video.vision_config.to_dict(),
                            prompt_encoder_config=video.prompt_encoder_config.to_dict(),
                            mask_decoder_config=video.mask_decoder_config.to_dict())
    Sam2Model(image_only).save_pretrained(tmp_path / "image-only")
    with pytest.raises(ModelLoadError, match="image-only"):
        load_video_model(tmp_path / "image-only", device="cpu")
    with pytest.raises(ModelLoadError):
        load_video_model(tmp_path / "missing", device="cpu")


def test_edgetam_video_models_propagate_too(video_stack):
    volume, _, point = video_stack
    model = random_video_model("edgetam_video")
    result = propagate_video(model, volume, 5, 0, points=[point])
    assert result.masks.shape == (16, 70, 90) and result.masks[5].any()
    from transformers.models.edgetam_video.modeling_edgetam_video import EdgeTamVideoInferenceSession

    alone = stock_session(stack_frames(volume, 5)[5:6], 0, [xy(*point)], [1],
                          session_class=EdgeTamVideoInferenceSession)
    assert np.array_equal(result.masks[5], to_mask(model(alone, frame_idx=0)))


def test_sam3_trackers_video_model_matches_its_own_session(video_stack):
    """SAM3's tracker video model (56-px input, mean/std 0.5) through the same stepper: the stock session's masks."""
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoInferenceSession

    from napari_sam.core.model import video_geometry

    model = random_video_model("sam3_tracker_video")
    geometry = video_geometry(model.config)
    assert geometry.image_size == (56, 56) and geometry.mean == (0.5, 0.5, 0.5)
    volume, _, point = video_stack
    result = propagate_video(model, volume, 5, 0, points=[point], geometry=geometry, score_threshold=0.0,
                             iou_threshold=0.0, min_area=0, max_regrowth=0.0, max_shift=0.0)
    assert (result.start, result.stop) == (0, 15)
    limits = default_contrast_limits(volume[5], False)
    frames = torch.stack([slice_input(image, geometry, limits) for image in volume])
    session = stock_session(frames, 5, [[point[1] * 56 / 90, point[0] * 56 / 70]], [1],
                            session_class=Sam3TrackerVideoInferenceSession)
    stock = {5: model(session, frame_idx=5)}
    for reverse in (False, True):
        for output in model.propagate_in_video_iterator(session, start_frame_idx=5, reverse=reverse):
            stock.setdefault(output.frame_idx, output)
    for index in range(16):
        assert np.array_equal(result.masks[index], to_mask(stock[index])), index


def test_a_video_checkpoints_normalisation_is_checked():
    """A scalar mean is every channel's, as transformers takes it; a mean of two numbers or a zero standard
    deviation is refused naming the field (it failed later with a reshape error, or divided by zero)."""
    from types import SimpleNamespace

    from napari_sam.core.errors import ModelLoadError
    from napari_sam.core.model import video_geometry

    config = SimpleNamespace(image_size=64, model_type="sam2_video")
    assert video_geometry(config, {"image_mean": 0.5}).mean == (0.5, 0.5, 0.5)
    with pytest.raises(ModelLoadError, match="image_mean must be one number or three"):
        video_geometry(config, {"image_mean": [0.5, 0.5]})
    with pytest.raises(ModelLoadError, match="image_std"):
        video_geometry(config, {"image_std": 0})
