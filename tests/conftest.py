"""Shared fixtures: tiny SAM checkpoints with seeded random weights, saved and reloaded like real ones."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
# the docks keep embeddings and large labels in per-user folders: a fresh pair for each test run
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="napari-sam-tests-cache-")
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="napari-sam-tests-data-")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402

from napari_sam.core.random_weights import random_sam, tiny_sam_config  # noqa: E402


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


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """{image_size: folder} for tiny checkpoints of input size 64 and 256."""
    return {size: save_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny-sam-{size}"), size) for size in (64, 256)}


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoints):
    """The 64-pixel tiny checkpoint's folder."""
    return tiny_checkpoints[64]


@pytest.fixture()
def notifications():
    """The napari notifications dispatched during the test."""
    from napari.utils import notifications as napari_notifications

    manager = napari_notifications.notification_manager  # looked up late: napari's fixtures may replace it
    before = len(manager.records)
    return lambda: manager.records[before:]


@pytest.fixture()
def session(make_napari_viewer, qtbot):
    """Start a viewer with the "Segment Anything" dock and tiny-cells loaded; yields a function that opens an
    image and returns (viewer, image layer, dock)."""
    from helpers import settle

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


@pytest.fixture(autouse=True)
def own_user_folders(tmp_path_factory, monkeypatch):
    """Each test gets its own per-user cache and data folders: the docks' embedding store starts empty."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a test module (use with ``pytestmark = pytest.mark.usefixtures(...)``): tiny models
    run fastest so, and do not stall when other processes hold the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
