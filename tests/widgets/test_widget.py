"""The dock widget in a real napari viewer (under Xvfb): model loading and embedding on worker threads."""

import numpy as np

from helpers import blob_image

WIDGET = ("napari-sam", "Segment Anything")


def load(qtbot, widget, model):
    widget.model_picker.native.setCurrentText(str(model))
    widget.load_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.load_button.enabled, timeout=60_000)


def test_widget_loads_a_model_and_embeds_the_image(make_napari_viewer, qtbot, tiny_checkpoint, dock_widget):
    viewer = make_napari_viewer()
    viewer.add_image((blob_image((80, 120)) * 3000).astype(np.uint16), name="cells")
    widget = dock_widget(viewer)
    load(qtbot, widget, tiny_checkpoint)
    assert widget.predictor is not None
    qtbot.waitUntil(lambda: widget.embedded_index == ("cells", ()), timeout=60_000)
    assert widget.predictor.image_size == (80, 120)
    assert widget.status.value.startswith("Ready")


def test_a_bad_model_shows_a_notification_and_the_widget_stays_usable(
        make_napari_viewer, qtbot, tiny_checkpoint, notifications, dock_widget):
    viewer = make_napari_viewer()
    viewer.add_image(blob_image((40, 40)), name="image")
    widget = dock_widget(viewer)
    load(qtbot, widget, "facebook/no-such-sam")
    qtbot.waitUntil(lambda: any("facebook/no-such-sam" in n.message for n in notifications()), timeout=10_000)
    assert widget.predictor is None
    load(qtbot, widget, tiny_checkpoint)
    assert widget.predictor is not None


def test_a_stack_embeds_the_shown_slice(make_napari_viewer, qtbot, tiny_checkpoint, dock_widget):
    viewer = make_napari_viewer()
    stack = np.stack([blob_image((50, 60), seed=s) for s in range(5)])
    layer = viewer.add_image(stack, name="stack", scale=(3.0, 0.5, 0.5))
    widget = dock_widget(viewer)
    load(qtbot, widget, tiny_checkpoint)
    viewer.dims.set_point(0, 3 * 3.0)
    qtbot.waitUntil(lambda: widget.embedded_index == ("stack", (3,)), timeout=60_000)
    assert widget.predictor.image_size == (50, 60)
    assert layer.data.shape == (5, 50, 60)


def test_demo_opens_offline_with_the_bundled_model(make_napari_viewer, qtbot):
    from napari_sam.demo import open_demo

    viewer = make_napari_viewer(show=True)
    widget = open_demo(viewer)
    assert [layer.name for layer in viewer.layers] == ["synthetic cells"]
    qtbot.waitUntil(lambda: widget.embedded_index == ("synthetic cells", ()), timeout=60_000)
    assert widget.model.model_name == "tiny-cells"
    assert widget.predictor.image_size == viewer.layers[0].data.shape
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)


def test_a_hub_model_offline_explains_how_to_go_on(make_napari_viewer, qtbot, notifications, dock_widget):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sam", "synthetic-cells")
    widget = dock_widget(viewer)
    load(qtbot, widget, "facebook/sam-vit-base")
    if widget.predictor is None:  # offline, not in the local cache: a notification says how to go on
        messages = [n.message for n in notifications()]
        assert any("facebook/sam-vit-base" in m and "folder" in m for m in messages), messages
        assert widget.status.value == "Could not load the model." and widget.load_button.enabled
    else:  # in the local cache: it loads offline, as a real SAM
        assert widget.status.value.startswith(("Loaded facebook/sam-vit-base", "Ready"))
        assert widget.predictor.geometry.image_size == 1024


def test_neighbouring_planes_are_prefetched_within_the_budget(make_napari_viewer, qtbot, tiny_checkpoint, dock_widget):
    viewer = make_napari_viewer()
    stack = np.stack([blob_image((50, 60), seed=s) for s in range(6)])
    layer = viewer.add_image(stack, name="stack")
    widget = dock_widget(viewer)
    load(qtbot, widget, tiny_checkpoint)
    widget.model.cache_megabytes.value = 64
    assert widget.predictor.cache.max_bytes == 64 << 20
    viewer.dims.set_point(0, 3)
    qtbot.waitUntil(lambda: widget.embedded_index == ("stack", (3,)) and not widget.busy, timeout=60_000)
    limits = tuple(layer.contrast_limits)
    for z in (2, 4):  # already embedded in the background: no encoder run now
        assert widget.predictor.prefetch(stack[z], contrast_limits=limits, rgb=False) == 0
    assert widget.predictor.prefetch(stack[0], contrast_limits=limits, rgb=False) == 1
