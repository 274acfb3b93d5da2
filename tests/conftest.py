"""Every fixture of the test suite, in one place: checkpoints (tiny ones with seeded random weights, saved and reloaded
like real ones, and the bundled tiny-cells), predictors on them, synthetic images, docks and batch runs.

The tests are split by layer (``core``, ``bridge``, ``batch``, ``widgets``); shared functions are in ``helpers.py``.
"""

import json
import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
# the docks keep embeddings and large labels in per-user folders: a fresh pair for each test run
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="napari-sam-tests-cache-")
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="napari-sam-tests-data-")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402
import torch  # noqa: E402

from napari_sam import Predictor  # noqa: E402
from napari_sam.core.model import BUNDLED_DIR  # noqa: E402
from napari_sam.core.settings import TilingSettings  # noqa: E402
from napari_sam.demo import synthetic_cells  # noqa: E402
from napari_sam.testing.random_weights import (  # noqa: E402
    random_family_model,
    random_sam,
    random_video_model,
    tiny_clip_tokenizer,
    tiny_sam_config,
)

from helpers import (  # noqa: E402
    FAMILY_SIZES,
    SAM3_SIZE,
    Reference,
    batch_config,
    blob_image,
    settle,
    tiny_cells_input_size,
    tiny_cells_tile,
    tiny_cells_with,
)


def save_tiny_checkpoint(folder, image_size: int, seed: int = 1):
    """Write a tiny randomised SAM checkpoint with its preprocessor config (safetensors) into ``folder``."""
    from transformers import SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    model = random_sam(tiny_sam_config(image_size), seed=seed)
    model.save_pretrained(folder)
    processor = SamProcessor(image_processor=SamImageProcessorPil(
        size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size}))
    processor.save_pretrained(folder)
    return folder


# --- the per-user folders, threads and notifications ----------------------------------------------------------------

@pytest.fixture(autouse=True)
def own_user_folders(tmp_path_factory, monkeypatch):
    """Each test gets its own per-user cache and data folders: the docks' embedding store starts empty."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a test module (use with ``pytestmark = pytest.mark.usefixtures(...)``): tiny models
    run fastest so, and do not stall when other processes hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def notifications():
    """The napari notifications dispatched during the test."""
    from napari.utils import notifications as napari_notifications

    manager = napari_notifications.notification_manager  # looked up late: napari's fixtures may replace it
    before = len(manager.records)
    return lambda: manager.records[before:]


# --- checkpoints ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """{image_size: folder} for tiny checkpoints of input size 64 and 256."""
    return {size: save_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny-sam-{size}"), size) for size in (64, 256)}


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoints):
    """The 64-pixel tiny checkpoint's folder."""
    return tiny_checkpoints[64]


@pytest.fixture(scope="module")
def bare_weights(tmp_path_factory):
    """{image_size: folder} of tiny checkpoints holding only config.json and model.safetensors, as many hub
    checkpoints do (no preprocessor config)."""
    folders = {}
    for size in (64, 256):
        folder = tmp_path_factory.mktemp(f"bare-weights-{size}")
        random_sam(tiny_sam_config(size), seed=5).save_pretrained(folder)
        folders[size] = folder
    return folders


@pytest.fixture(scope="module")
def minimal_config_weights(tmp_path_factory):
    """A checkpoint whose config.json sets only the model type and three vision fields, like SlimSAM's: every size
    is transformers' config default."""
    from transformers import SamConfig

    minimal = {"model_type": "sam", "vision_config": {"hidden_size": 32, "num_hidden_layers": 2,
                                                      "num_attention_heads": 2}}
    folder = tmp_path_factory.mktemp("minimal-config")
    random_sam(SamConfig(**{k: v for k, v in minimal.items() if k != "model_type"}), seed=2).save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(minimal))
    return folder


@pytest.fixture(scope="module")
def family_checkpoints(tmp_path_factory):
    """{family: folder} of tiny SAM-HQ, SAM2.1 and SAM3-tracker checkpoints (:data:`helpers.FAMILY_SIZES`)."""
    folders = {}
    for family, size in FAMILY_SIZES.items():
        folders[family] = tmp_path_factory.mktemp(family)
        random_family_model(family, size, seed=3).save_pretrained(folders[family])
    return folders


@pytest.fixture(scope="module")
def concept_checkpoint(tmp_path_factory):
    """A tiny SAM3 concept checkpoint with its CLIP tokenizer."""
    path = tmp_path_factory.mktemp("sam3")
    random_family_model("sam3", SAM3_SIZE, seed=2).save_pretrained(path)
    tiny_clip_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pessimistic_checkpoint(tmp_path_factory):
    """tiny-cells with its IoU head shifted so that every predicted IoU is negative, as random models can be."""
    import shutil

    from transformers import SamModel

    folder = tmp_path_factory.mktemp("pessimistic")
    model = SamModel.from_pretrained(str(BUNDLED_DIR / "tiny-cells"))
    with torch.no_grad():
        model.mask_decoder.iou_prediction_head.proj_out.bias -= 3.0
    model.save_pretrained(folder)
    shutil.copy(BUNDLED_DIR / "tiny-cells" / "preprocessor_config.json", folder)
    return folder


# --- predictors -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_cells():
    """The bundled tiny-cells, with the settings it recommends (it sees images larger than 256 px in tiles)."""
    return Predictor.from_pretrained("tiny-cells", device="cpu")


@pytest.fixture(scope="module")
def tiny_cells_whole():
    """tiny-cells seeing every image whole: scenes that scale with the image, as if resized from 256 pixels."""
    return Predictor.from_pretrained("tiny-cells", device="cpu", tiling=TilingSettings(mode="whole"))


@pytest.fixture(scope="module")
def tiny_cells_capped(tmp_path_factory):
    """tiny-cells told never to enlarge an image."""
    return Predictor.from_pretrained(tiny_cells_with(tmp_path_factory.mktemp("capped"), {"max_upscale": 1.0}),
                                     device="cpu")


@pytest.fixture()
def tiny_predictor(tiny_checkpoint):
    """A fresh predictor of the 64-pixel tiny checkpoint."""
    return Predictor.from_pretrained(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def predictors(tiny_checkpoints):
    """{image_size: predictor} of the tiny checkpoints, every image seen whole (as transformers' path sees it)."""
    return {size: Predictor.from_pretrained(folder, device="cpu", tiling=TilingSettings(mode="whole"))
            for size, folder in tiny_checkpoints.items()}


@pytest.fixture(scope="module")
def references(tiny_checkpoints):
    """{image_size: transformers' documented SAM path} on the tiny checkpoints."""
    return {size: Reference(folder, size) for size, folder in tiny_checkpoints.items()}


@pytest.fixture(scope="module")
def concept_predictor(concept_checkpoint):
    return Predictor.from_pretrained(concept_checkpoint, device="cpu", tiling=TilingSettings(mode="whole"))


@pytest.fixture(scope="module")
def transformers_pipeline():
    """transformers' mask-generation pipeline on the bundled tiny-cells checkpoint.

    Re-randomised tiny models give masks that cover most of the image, so every grid point yields about the
    same mask and NMS leaves one: nothing to compare. tiny-cells gives one mask per cell.
    """
    from transformers import SamModel, pipeline
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    side = tiny_cells_input_size()
    processor = SamImageProcessorPil(size={"longest_edge": side}, pad_size={"height": side, "width": side})
    return pipeline("mask-generation", model=SamModel.from_pretrained(str(BUNDLED_DIR / "tiny-cells")),
                    image_processor=processor, device="cpu")


@pytest.fixture(scope="module")
def video_model():
    """A tiny SAM2 video model with seeded random weights."""
    return random_video_model()


# --- images ---------------------------------------------------------------------------------------------------------

@pytest.fixture()
def image():
    """120 x 90 uint16 blobs."""
    return (blob_image((120, 90), seed=3) * 4000 + 200).astype(np.uint16)


@pytest.fixture()
def cells():
    """(image, labels): 200 x 240 synthetic cells."""
    return synthetic_cells((200, 240), seed=777_001)


@pytest.fixture(scope="module")
def small_cells():
    """120 x 150 pixels, cells of radius 10-14: their size in tiny-cells' training frames when not enlarged."""
    return synthetic_cells((120, 150), seed=960_001, radius_range=(10.0, 14.0), n_cells=8)


@pytest.fixture(scope="module")
def large_cells():
    """(image, labels): 4096² uint16, ~5000 cells of 10-15 px radius."""
    return synthetic_cells((4096, 4096), seed=930_001, radius_range=(10.0, 15.0), n_cells=5000)


@pytest.fixture(scope="module")
def video_stack():
    """(16, 70, 90) uint16 synthetic cells, and a (row, col) click at the centre of the largest cell on slice 5."""
    volume, labels = synthetic_cells((16, 70, 90), seed=3, ndim=3, n_cells=3)
    cell = np.bincount(labels[5].ravel())[1:].argmax() + 1
    rows, cols = np.nonzero(labels[5] == cell)
    return volume, labels[5] == cell, (float(rows.mean()), float(cols.mean()))


@pytest.fixture()
def stack_file(tmp_path):
    """A 2-plane uint16 TIFF of planes over twice tiny-cells' tile (600² for a 256-pixel model: 9 tiles a plane)."""
    side = 2 * tiny_cells_tile() + 88
    stack = synthetic_cells((2, side, side), seed=940_101, ndim=3, radius_range=(10.0, 15.0),
                            n_cells=round(100 * side**2 / 600**2))[0]
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack)
    return path, stack


# --- docks ----------------------------------------------------------------------------------------------------------

@pytest.fixture()
def dock_widget(qtbot):
    """Dock the Segment Anything widget in a viewer; at the end, wait for its workers so none outlives the test."""
    docked = []

    def add(viewer):
        _, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
        docked.append(widget)
        return widget

    yield add
    for widget in docked:
        qtbot.waitUntil(lambda w=widget: not w.busy, timeout=60_000)


@pytest.fixture()
def session(make_napari_viewer, qtbot):
    """Start a viewer with the "Segment Anything" dock and tiny-cells loaded; yields a function that opens an
    image and returns (viewer, image layer, dock)."""
    docks = []

    def start(image, show=False, **layer_kwargs):
        viewer = make_napari_viewer(show=show)
        layer = viewer.add_image(image, name="image", **layer_kwargs)
        _, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
        docks.append(widget)
        widget.model_picker.native.setCurrentText("tiny-cells")
        widget.load_model()
        qtbot.waitUntil(lambda: widget.predictor is not None and widget.points_picker.value is not None,
                        timeout=60_000)
        settle(qtbot, widget)
        return viewer, layer, widget

    yield start
    for widget in docks:
        qtbot.waitUntil(lambda w=widget: not w.busy, timeout=60_000)


@pytest.fixture()
def everything_dock(make_napari_viewer, qtbot):
    """Start a viewer with the "Segment everything" dock, tiny-cells loaded and quick settings; yields a function
    that opens an image and returns (viewer, image layer, dock)."""
    docked = []

    def start(image, **layer_kwargs):
        viewer = make_napari_viewer()
        layer = viewer.add_image(image, name="cells", **layer_kwargs)
        _, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment everything")
        docked.append(widget)
        widget.model_picker.native.setCurrentText("tiny-cells")
        widget.load_model()
        qtbot.waitUntil(lambda: widget.predictor is not None and not widget.busy, timeout=60_000)
        widget.settings["method"].value = "grid"  # the dock's grid runs (tiny-cells recommends its instance head)
        widget.settings["points_per_side"].value = 16
        widget.settings["pred_iou_thresh"].value = 0.8
        widget.settings["stability_score_thresh"].value = 0.9
        return viewer, layer, widget

    yield start
    for widget in docked:
        qtbot.waitUntil(lambda w=widget: not w.busy, timeout=120_000)


# --- batch runs -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dask_cluster():
    """A scheduler with 2 worker processes (one torch thread each), shared by the tests of a module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      env={"OMP_NUM_THREADS": "1"}) as local, Client(local) as client:
        yield local.scheduler_address, client


@pytest.fixture(scope="module")
def batch_dataset(tmp_path_factory):
    """(folder, {name: image}): 8 images: 6 TIFF (OME with a pixel size), a PNG and a corrupt TIFF."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    images = {}
    for index in range(6):
        image = synthetic_cells((96, 128), seed=970_000 + index, radius_range=(8.0, 14.0))[0]
        tifffile.imwrite(folder / f"cells_{index}.tif", image, ome=True,
                         metadata={"axes": "YX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65})
        images[f"cells_{index}"] = image
    png = (synthetic_cells((96, 128), seed=970_100, dtype=np.uint8, radius_range=(8.0, 14.0))[0])
    Image.fromarray(png).save(folder / "cells_png.png")
    images["cells_png"] = png
    (folder / "corrupt.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    return folder, images


@pytest.fixture(scope="module")
def clean_batch_outputs(dask_cluster, batch_dataset, tmp_path_factory):
    """The outputs of one uninterrupted run over the batch dataset, which interrupted runs must reproduce."""
    from napari_sam.batch import run_batch

    clean = tmp_path_factory.mktemp("clean")
    run_batch([str(batch_dataset[0])], str(clean), batch_config(), scheduler=dask_cluster[0], progress=False)
    return clean
