"""Predictor behaviour beyond equivalence: bad input, the embedding cache, loading, thread use."""

import json
import threading

import numpy as np
import pytest
import torch

from napari_sam import EmbeddingCache, ModelLoadError, Predictor
from napari_sam.core.image import display_rgb

from conftest import save_tiny_checkpoint
from helpers import blob_image, count_encoder_runs, in_threads

# --- images ---------------------------------------------------------------------------------------------------

def test_bool_image_is_refused(tiny_predictor):
    with pytest.raises(ValueError, match="Boolean images are not supported"):
        tiny_predictor.set_image(np.zeros((10, 10), dtype=bool))


@pytest.mark.parametrize("shape", [(5, 10, 10), (10, 10, 2), (10,), (0, 10)])
def test_bad_shapes_are_refused(tiny_predictor, shape):
    with pytest.raises(ValueError, match="shape"):
        tiny_predictor.set_image(np.zeros(shape, dtype=np.uint8))


def test_rgb_flag_must_fit_the_shape(tiny_predictor):
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        tiny_predictor.set_image(np.zeros((10, 10), dtype=np.uint8), rgb=True)


def test_complex_and_all_nan_images_are_refused(tiny_predictor):
    with pytest.raises(ValueError, match="dtype"):
        tiny_predictor.set_image(np.zeros((10, 10), dtype=np.complex64))
    with pytest.raises(ValueError, match="no finite values"):
        tiny_predictor.set_image(np.full((10, 10), np.nan, dtype=np.float32))


@pytest.mark.parametrize("limits", [(5, 5), (10, 2), (0, np.inf), (1, 2, 3), 5, "ab", (None, 3)])
def test_bad_contrast_limits_are_refused(tiny_predictor, image, limits):
    with pytest.raises(ValueError, match="contrast_limits"):
        tiny_predictor.set_image(image, contrast_limits=limits)


def test_display_follows_contrast_limits_and_handles_nan():
    data = np.array([[0, 1000, 2000], [3000, 4000, 65535]], dtype=np.uint16)
    shown = display_rgb(data, contrast_limits=(1000, 3000)).numpy()
    assert shown.shape == (3, 2, 3)
    np.testing.assert_allclose(shown[0], [[0, 0, 0.5], [1, 1, 1]])
    floats = np.array([[np.nan, 0.0], [np.inf, -np.inf]], dtype=np.float32)
    np.testing.assert_allclose(display_rgb(floats, contrast_limits=(0, 1)).numpy()[1], [[0, 0], [1, 0]])


def test_robust_percentiles_ignore_outliers():
    data = np.full((100, 100), 1000, dtype=np.uint16)
    data[:50] = 2000
    data[0, 0] = 65535  # one hot pixel must not squash the display
    shown = display_rgb(data).numpy()[0]
    assert shown[10, 10] == pytest.approx(1.0) and shown[80, 80] == pytest.approx(0.0)


def test_uint16_is_not_truncated_to_8_bits(tiny_predictor):
    """16-bit data whose values all lie above 255 still gives an image-dependent embedding."""
    base = blob_image((64, 64), seed=1)
    tiny_predictor.set_image((base * 20000 + 30000).astype(np.uint16))
    first = tiny_predictor.predict(points=[[32, 32]]).scores
    tiny_predictor.set_image((base[::-1] * 20000 + 30000).astype(np.uint16))
    assert np.abs(tiny_predictor.predict(points=[[32, 32]]).scores - first).max() > 1e-4


# --- prompts --------------------------------------------------------------------------------------------------

def test_predict_needs_an_image(tiny_predictor):
    with pytest.raises(RuntimeError, match="set_image"):
        tiny_predictor.predict(points=[[1, 1]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "Empty prompt"),
        ({"points": np.zeros((0, 2))}, "Empty prompt"),
        ({"points": [[130, 10]]}, "outside the 120x90 image"),
        ({"points": [[10, -3]]}, "outside"),
        ({"points": [[10, np.nan]]}, "NaN"),
        ({"points": [[1, 2, 3]]}, r"shape \(n, 2\)"),
        ({"points": [[10, 10]], "point_labels": [2]}, "1 \\(positive\\) or 0"),
        ({"points": [[10, 10]], "point_labels": [1, 0]}, "one label per point"),
        ({"boxes": [[10, 10, 10, 40]]}, "Degenerate"),
        ({"boxes": [[50, 40, 20, 60]]}, "Degenerate"),
        ({"boxes": [[200, 10, 300, 40]]}, "outside"),
        ({"boxes": [[1, 1, 5, 5], [6, 6, 9, 9]], "points": [[3, 3]]}, "one object"),
        ({"points": [[10, 10]], "mask_input": np.zeros((16, 16))}, "mask_input"),
        ({"points": [[10, 10]], "mask_input": "abc"}, "mask_input must be low-resolution logits.*'abc'"),
        ({"points": [[10, 10]], "mask_input": np.ones((32, 32), dtype=bool)}, "not a bool mask.*mask_logits"),
    ],
)
def test_bad_prompts_raise_clear_errors(tiny_predictor, image, kwargs, message):
    tiny_predictor.set_image(image)
    with pytest.raises(ValueError, match=message):
        tiny_predictor.predict(**kwargs)


def test_boxes_overlapping_the_edge_are_clipped(tiny_predictor, image):
    tiny_predictor.set_image(image)
    clipped = tiny_predictor.predict(boxes=[[-20, 10, 60, 200]])
    inside = tiny_predictor.predict(boxes=[[0, 10, 60, 89]])
    np.testing.assert_array_equal(clipped.masks, inside.masks)


def test_prediction_shapes_and_best(tiny_predictor, image):
    tiny_predictor.set_image(image)
    result = tiny_predictor.predict(boxes=[[5, 5, 50, 50], [60, 20, 110, 80], [10, 50, 40, 85]])
    mask_size = tiny_predictor.geometry.mask_size
    assert result.masks.shape == (3, 3, 120, 90) and result.masks.dtype == bool
    assert result.scores.shape == (3, 3) and result.logits.shape == (3, 3, mask_size, mask_size)
    assert result.best_masks().shape == (3, 120, 90)
    single = tiny_predictor.predict(points=[[60, 45]], multimask=False)
    assert single.masks.shape == (1, 1, 120, 90)


def test_batched_boxes_match_one_by_one(tiny_predictor, image):
    tiny_predictor.set_image(image)
    boxes = [[5, 5, 50, 50], [60, 20, 110, 80]]
    batched = tiny_predictor.predict(boxes=boxes)
    for index, box in enumerate(boxes):
        alone = tiny_predictor.predict(boxes=[box])
        assert (alone.masks[0] != batched.masks[index]).mean() < 1e-3
        np.testing.assert_allclose(alone.scores[0], batched.scores[index], atol=1e-4)


# --- embedding cache ------------------------------------------------------------------------------------------

def embed(tiny_predictor, image, **kwargs) -> bool:
    """Set ``image`` and embed it now; whether the encoder ran."""
    tiny_predictor.set_image(image, **kwargs)
    return tiny_predictor.precompute() > 0


def test_set_image_is_lazy(tiny_predictor, image):
    runs = count_encoder_runs(tiny_predictor)
    tiny_predictor.set_image(image)
    assert not runs  # nothing encoded yet
    tiny_predictor.predict(points=[[60, 45]])
    assert len(runs) == 1
    assert tiny_predictor.precompute() == 0  # already embedded


def test_an_image_changed_in_place_after_set_image_is_embedded_anew(tiny_predictor, image, tiny_checkpoint):
    """An in-memory image changed in place after ``set_image`` is predicted as it is now, not from the embedding of
    its old pixels (once the mask of the old image came back); an unchanged image runs the encoder once."""
    runs = count_encoder_runs(tiny_predictor)
    tiny_predictor.set_image(image, contrast_limits=(0, 4000))
    point = [[60, 45]]
    before = tiny_predictor.predict(points=point)
    assert np.array_equal(tiny_predictor.predict(points=point).masks, before.masks) and len(runs) == 1
    image[:, : image.shape[1] // 2] = image[:, image.shape[1] // 2:][:, ::-1]  # the user edits the array in place
    after = tiny_predictor.predict(points=point)
    fresh = Predictor.from_pretrained(tiny_checkpoint, device="cpu")
    fresh.set_image(image.copy(), contrast_limits=(0, 4000))
    expected = fresh.predict(points=point)
    assert len(runs) == 2 and not np.array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after.masks, expected.masks)
    np.testing.assert_allclose(after.scores, expected.scores, atol=1e-6)


def test_same_image_twice_runs_the_encoder_once(tiny_predictor, image):
    runs = count_encoder_runs(tiny_predictor)
    assert embed(tiny_predictor, image) is True
    assert embed(tiny_predictor, image.copy()) is False  # same content, another array
    assert len(runs) == 1
    embed(tiny_predictor, image, contrast_limits=(0, 3000))  # other contrast: another embedding
    assert len(runs) == 2
    changed = image.copy()
    changed[0, 0] += 1
    embed(tiny_predictor, changed)
    assert len(runs) == 3
    embed(tiny_predictor, image)  # back to the first: cached
    assert len(runs) == 3


def test_cache_respects_its_memory_budget(tiny_checkpoint):
    one = Predictor.from_pretrained(tiny_checkpoint, device="cpu")
    embed(one, np.zeros((8, 8), np.uint8))
    per_embedding = one.cache.nbytes
    cache = EmbeddingCache(max_items=10, max_bytes=2 * per_embedding)
    predictor = Predictor.from_pretrained(tiny_checkpoint, device="cpu", cache=cache)
    runs = count_encoder_runs(predictor)
    images = [np.full((8, 8), value, np.uint8) for value in (10, 20, 30)]
    for img in images:
        embed(predictor, img)
    assert len(runs) == 3
    assert len(cache) == 2 and cache.nbytes <= 2 * per_embedding
    embed(predictor, images[2])
    embed(predictor, images[1])
    assert len(runs) == 3
    embed(predictor, images[0])  # evicted, computed again
    assert len(runs) == 4


def test_predict_from_worker_threads(tiny_predictor, image):
    tiny_predictor.set_image(image)
    expected = tiny_predictor.predict(points=[[60, 45]]).masks
    results = in_threads(lambda: tiny_predictor.predict(points=[[60, 45]]).masks)
    assert len(results) == 4
    assert all(np.array_equal(r, expected) for r in results)


def test_from_memory_never_waits_for_the_encoder_or_another_thread(tiny_predictor, image, tmp_path):
    from napari_sam.core.embeddings import EmbeddingStore
    from napari_sam.core.errors import EncoderNeeded

    tiny_predictor.store = EmbeddingStore(tmp_path / "store")
    runs = count_encoder_runs(tiny_predictor)
    assert tiny_predictor.decode_seconds() is None
    with pytest.raises(EncoderNeeded, match="not embedded"), tiny_predictor.from_memory():
        tiny_predictor.set_image(image)
        tiny_predictor.predict(points=[[60, 45]])
    assert not runs and tiny_predictor.decode_seconds() is None  # neither encoded nor decoded
    expected = tiny_predictor.predict(points=[[60, 45]])  # embeds (memory and store)
    assert len(runs) == 1 and tiny_predictor.decode_seconds() > 0
    with tiny_predictor.from_memory():
        quick = tiny_predictor.predict(points=[[60, 45]])
    assert np.array_equal(quick.masks, expected.masks) and len(runs) == 1
    tiny_predictor.cache.clear()  # still in the store: reading it may wait on the disk
    with pytest.raises(EncoderNeeded), tiny_predictor.from_memory():
        tiny_predictor.predict(points=[[60, 45]])
    held, release = threading.Event(), threading.Event()

    def hold():
        with tiny_predictor.locked():
            held.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    held.wait(10)
    try:
        with pytest.raises(EncoderNeeded, match="in use"), tiny_predictor.from_memory():
            pass
    finally:
        release.set()
        worker.join()
    tiny_predictor.predict(points=[[60, 45]])  # the store's entry; the lock is free again; nothing is left set
    assert len(runs) == 1


def test_the_encoder_batch_follows_the_free_gpu_memory():
    from napari_sam.core.embeddings.frame_embeddings import MAX_ENCODER_BATCH, encoder_batch

    gib = 1 << 30
    assert encoder_batch(torch.device("cpu"), None, None) == 1
    assert encoder_batch(torch.device("cuda"), 40 * gib, None) == 1  # a frame's peak memory not known yet
    assert encoder_batch(torch.device("cuda"), 16 * gib, 2 * gib) == 4  # half the free memory
    assert encoder_batch(torch.device("cuda"), 70 * gib, gib // 2) == MAX_ENCODER_BATCH
    assert encoder_batch(torch.device("cuda"), gib, 3 * gib) == 1


def test_a_batch_of_frames_is_stored_and_matches_frames_embedded_alone(tiny_checkpoint, tmp_path, monkeypatch):
    from napari_sam.core.embeddings import EmbeddingStore, frame_embeddings
    from napari_sam.core.image import Frame
    from napari_sam.core.settings import TilingSettings

    monkeypatch.setattr(frame_embeddings, "encoder_batch", lambda device, free, per_frame: 16)  # as on a GPU

    tiles = TilingSettings(mode="tiles", tile_size=64)
    image = (blob_image((150, 170), seed=5) * 4000 + 200).astype(np.uint16)
    alone = Predictor.from_pretrained(tiny_checkpoint, device="cpu", tiling=tiles)
    batched = Predictor.from_pretrained(tiny_checkpoint, device="cpu", tiling=tiles,
                                        store=EmbeddingStore(tmp_path / "store"))
    alone.set_image(image)
    batched.set_image(image)
    frames = batched.frames() + [Frame(0, 0, 40, 50, 1.0)]  # the tiles, and a frame of another input size
    runs = count_encoder_runs(batched)
    assert batched.embed_frames(frames) == len(frames) >= 5 and len(runs) == 2  # one batch per input size
    batched.cache.clear()
    assert batched.embed_frames(frames) == 0 and len(runs) == 2  # every frame is in the store
    point = [[75, 85]]
    assert (alone.predict(points=point).masks != batched.predict(points=point).masks).mean() < 1e-3


def test_planes_prefetched_in_one_batch_match_planes_embedded_alone(tiny_checkpoint, monkeypatch):
    from napari_sam.core.embeddings import frame_embeddings

    monkeypatch.setattr(frame_embeddings, "encoder_batch", lambda device, free, per_frame: 4)  # as on a GPU
    planes = [(blob_image((60, 50), seed=seed) * 4000 + 200).astype(np.uint16) for seed in (6, 7, 8)]
    alone, batched = (Predictor.from_pretrained(tiny_checkpoint, device="cpu") for _ in range(2))
    runs = count_encoder_runs(batched)
    assert batched.prefetch(planes, contrast_limits=(0, 4200), rgb=False) == 3 and len(runs) == 1
    assert batched.prefetch(planes[0], contrast_limits=(0, 4200), rgb=False) == 0  # one image: cached
    assert batched.prefetch(planes, contrast_limits=(0, 4000), rgb=False, max_frames=0) == 0  # none left in
    for plane in planes:
        alone.set_image(plane, contrast_limits=(0, 4200))
        batched.set_image(plane, contrast_limits=(0, 4200))
        (one, _), (many, ran) = alone.frame_embedding(alone.frames()[0]), batched.frame_embedding(batched.frames()[0])
        assert not ran and (one.embedding - many.embedding).abs().max() <= 1e-4 * one.embedding.abs().max()


# --- loading --------------------------------------------------------------------------------------------------

def test_missing_hub_id_names_it_and_suggests_a_folder():
    with pytest.raises(ModelLoadError, match="facebook/no-such-sam") as info:
        Predictor.from_pretrained("facebook/no-such-sam", device="cpu")
    assert "folder" in str(info.value)


def test_corrupt_folder_is_reported(tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "broken", 64)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="broken"):
        Predictor.from_pretrained(folder, device="cpu")


def test_a_folder_without_config_is_named_at_once(tmp_path, tiny_checkpoint, capfd):
    """A folder of weights without config.json is refused in one line, before transformers reports every weight as
    missing (130 lines once, then a message about weights that do not fit)."""
    folder = tmp_path / "weights-only"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((tiny_checkpoint / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="holds no config.json: it is not a saved checkpoint"):
        Predictor.from_pretrained(folder, device="cpu")
    assert "MISSING" not in capfd.readouterr().err


def test_pickle_only_folder_is_refused(tmp_path, tiny_checkpoint):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    model = Predictor.from_pretrained(tiny_checkpoint, device="cpu").model
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors"):
        Predictor.from_pretrained(folder, device="cpu")


def test_non_sam_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError):
        Predictor.from_pretrained(tmp_path, device="cpu")


def test_geometry_comes_from_the_checkpoint(tiny_checkpoints, tmp_path):
    small = Predictor.from_pretrained(tiny_checkpoints[64], device="cpu").geometry
    assert (small.image_size, small.embedding_size, small.mask_size, small.pad_size) == (64, 8, 32, (64, 64))
    large = Predictor.from_pretrained(tiny_checkpoints[256], device="cpu").geometry
    assert (large.image_size, large.embedding_size, large.mask_size) == (256, 16, 64)
    folder = save_tiny_checkpoint(tmp_path / "medical", 64)
    saved = json.loads((folder / "processor_config.json").read_text())
    assert Predictor.from_pretrained(folder, device="cpu").geometry.mean == tuple(
        saved["image_processor"]["image_mean"])
    # the older layout, as on the hub: preprocessor_config.json (transformers reads processor_config.json first)
    config = dict(saved["image_processor"], image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25])
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    assert Predictor.from_pretrained(folder, device="cpu").geometry.mean == tuple(
        saved["image_processor"]["image_mean"])
    (folder / "processor_config.json").unlink()
    geometry = Predictor.from_pretrained(folder, device="cpu").geometry
    assert geometry.mean == (0.5, 0.5, 0.5) and geometry.std == (0.25, 0.25, 0.25)
    config["pad_size"] = {"height": 32, "width": 32}
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="Inconsistent"):
        Predictor.from_pretrained(folder, device="cpu")


def test_device_and_dtype(tiny_checkpoint, image):
    with pytest.raises(ValueError, match="device"):
        Predictor.from_pretrained(tiny_checkpoint, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Predictor.from_pretrained(tiny_checkpoint, device="cuda")
    bf16 = Predictor.from_pretrained(tiny_checkpoint, device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    bf16.set_image(image)
    assert bf16.predict(points=[[60, 45]]).masks.shape == (1, 3, 120, 90)
