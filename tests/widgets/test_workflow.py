"""The workflow as a user meets it, under Xvfb: the selection after a commit, the preview's colour, writes that
cannot be done, races with model switches and removed layers, one model per viewer, compact docks."""

import numpy as np
import pytest
from napari.layers import Labels

from napari_sam.core.objects import mask_iou
from napari_sam.demo import synthetic_cells

from helpers import cell_point, largest_cells, settle


def click(widget, labels, cell):
    widget.points_picker.value.add(cell_point(labels, cell))


def test_the_points_layer_stays_active_in_add_mode_after_every_commit(session, qtbot, cells):
    """The first commit creates the labels layer; napari would select it, and the next click would do nothing."""
    image, labels = cells
    viewer, _, widget = session(image)
    points = widget.points_picker.value
    for cell in largest_cells(labels, 2):
        click(widget, labels, cell)
        settle(qtbot, widget)
        assert widget.commit()
        assert viewer.layers.selection.active is points and points.mode == "add"
    assert isinstance(widget.labels_picker.value, Labels)


def test_the_preview_has_a_colour_no_committed_label_gets(session, qtbot, cells):
    image, labels = cells
    viewer, _, widget = session(image)
    click(widget, labels, largest_cells(labels, 1)[0])
    settle(qtbot, widget)
    preview = np.asarray(widget.preview_layer.colormap.map(1))[:3]
    committed = Labels(np.zeros((2, 2), dtype=np.uint32))  # the colours napari gives committed labels
    colours = np.array([np.asarray(committed.colormap.map(i))[:3] for i in range(1, 1001)]).reshape(-1, 3)
    assert np.linalg.norm(colours - preview, axis=1).min() > 0.3


def test_a_failed_commit_writes_nothing_and_keeps_the_undo_history(session, qtbot, cells, notifications):
    image, labels = cells
    viewer, _, widget = session(image)
    small = viewer.add_labels(np.zeros((120, 120), dtype=np.uint32), name="small")
    widget.labels_picker.value = small
    first, second = largest_cells(labels, 2)
    inside = first if (cell_point(labels, first) < 100).all() else second
    click(widget, labels, inside)
    settle(qtbot, widget)
    assert widget.commit()
    after_first = small.data.copy()
    shapes = widget.shapes_picker.value
    rows, cols = np.nonzero(labels == inside)
    far = [[150, 180], [195, 235]]  # a box outside the 120 x 120 labels
    shapes.add_rectangles([[[rows.min(), cols.min()], [rows.max(), cols.max()]], far])
    settle(qtbot, widget)
    assert widget.commit() == []
    assert any("outside the labels layer" in n.message for n in notifications())
    assert np.array_equal(small.data, after_first)
    small.undo()  # the first commit only
    assert not small.data.any()


def test_a_full_uint8_layer_offers_to_widen_it(session, qtbot, cells, notifications):
    image, labels = cells
    viewer, _, widget = session(image)
    full = viewer.add_labels(np.zeros(labels.shape, dtype=np.uint8), name="full")
    full.data[0, 0] = 255
    widget.labels_picker.value = full
    click(widget, labels, largest_cells(labels, 1)[0])
    settle(qtbot, widget)
    assert widget.commit() == []
    (notice,) = [n for n in notifications() if "uint8" in n.message]
    assert full.data.max() == 255 and (full.data > 0).sum() == 1
    label, widen = notice.actions[0]
    assert "uint32" in label
    widen()
    assert full.data.dtype == np.uint32 and full.data[0, 0] == 255
    settle(qtbot, widget)
    assert widget.commit() == [256]


def test_a_model_switch_does_not_reuse_the_old_models_logits(session, qtbot, cells, tiny_checkpoint, notifications):
    """tiny-cells' low-res masks are 64 x 64, the tiny checkpoint's 32 x 32."""
    image, labels = cells
    viewer, _, widget = session(image)
    cell = largest_cells(labels, 1)[0]
    click(widget, labels, cell)
    settle(qtbot, widget)
    widget.model_picker.native.setCurrentText(str(tiny_checkpoint))
    widget.load_model()
    qtbot.waitUntil(lambda: widget.session.name == str(tiny_checkpoint) and not widget.busy, timeout=60_000)
    settle(qtbot, widget)
    widget.points_picker.value.add(cell_point(labels, cell) + 2)  # one more point: logits would be reused
    settle(qtbot, widget)
    assert not [n.message for n in notifications() if "failed" in n.message]
    assert widget.preview is not None and len(widget.preview.masks) == 1
    assert widget.preview.logits[0].shape[-1] == widget.predictor.geometry.mask_size


def test_removing_the_image_during_its_first_prediction(session, qtbot, cells):
    image, labels = cells
    viewer, layer, widget = session(image)
    click(widget, labels, largest_cells(labels, 1)[0])
    viewer.layers.remove(layer)  # before the worker's result comes back
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    qtbot.wait(100)
    assert widget.preview is None
    assert widget.preview_layer is None or widget.preview_layer not in viewer.layers


def test_one_model_session_per_viewer_shared_by_the_docks(session, qtbot, cells, make_napari_viewer):
    image, _ = cells
    viewer, _, widget = session(image)
    _, everything = viewer.window.add_plugin_dock_widget("napari-sam", "Segment everything")
    assert everything.predictor is widget.predictor  # loaded once, for both
    assert everything.model.model_name == "tiny-cells"
    assert everything.status.value.startswith("Loaded") or everything.status.value.startswith("Ready")
    everything.model.cache_megabytes.value = 32
    assert widget.predictor.cache.max_bytes == 32 << 20
    other = make_napari_viewer()
    _, elsewhere = other.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    assert elsewhere.predictor is None  # another viewer has its own session


def test_overlapping_loads_leave_the_newest_model_and_its_name(make_napari_viewer, qtbot, tiny_checkpoint,
                                                               notifications):
    """Load pressed for one model, then at once for another (or in two docks): once both loads failed with false
    errors and the picker named a model that was not loaded. Now the newest request is the model in use, the pickers
    name it, and a failed load leaves the loaded model named."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 80), np.uint16), name="image")
    _, prompts = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    _, everything = viewer.window.add_plugin_dock_widget("napari-sam", "Segment everything")
    prompts.model_picker.native.setCurrentText(str(tiny_checkpoint))
    prompts.load_model()
    everything.model_picker.native.setCurrentText("tiny-cells")
    everything.load_model()
    qtbot.waitUntil(lambda: not prompts.busy and not everything.busy, timeout=60_000)
    assert prompts.predictor is everything.predictor and prompts.predictor.checkpoint == "tiny-cells"
    assert prompts.model.model_name == everything.model.model_name == "tiny-cells"
    assert not [n for n in notifications() if "load" in str(n.message).lower()]
    prompts.model_picker.native.setCurrentText(str(tiny_checkpoint / "no-such-folder"))
    prompts.load_model()
    qtbot.waitUntil(lambda: not prompts.busy, timeout=60_000)
    assert prompts.predictor.checkpoint == "tiny-cells" and prompts.model.model_name == "tiny-cells"
    assert "tiny-cells is still loaded" in prompts.status.value


def test_docks_leave_the_canvas_most_of_the_default_window(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-sam", "synthetic-cells")
    window = viewer.window._qt_window
    for name in ("Segment Anything", "Segment everything"):
        dock, widget = viewer.window.add_plugin_dock_widget("napari-sam", name)
        qtbot.wait(50)
        assert widget.native.sizeHint().width() <= 320, (name, widget.native.sizeHint().width())
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.wait(100)
    assert canvas.width() >= 0.45 * window.width(), (canvas.width(), window.width())


def test_propagation_reads_planes_on_the_worker_one_at_a_time(session, qtbot):
    """A dask-backed stack: after Propagate is pressed, no plane but the shown one is read on the UI thread."""
    import threading

    import dask
    import dask.array as da

    stack, truth = synthetic_cells((12, 128, 128), seed=777_102, ndim=3)
    reads = []

    def load(z):
        reads.append((z, threading.current_thread() is threading.main_thread()))
        return stack[z]

    lazy = da.stack([da.from_delayed(dask.delayed(load)(z), shape=stack.shape[1:], dtype=stack.dtype)
                     for z in range(len(stack))])
    viewer, layer, widget = session(lazy, contrast_limits=(float(stack.min()), float(stack.max())))
    from helpers import click_largest_cell

    cell, middle = click_largest_cell(qtbot, viewer, widget, truth)
    reads.clear()
    widget.propagate()
    qtbot.waitUntil(lambda: widget.propagated_id is not None and not widget.busy, timeout=120_000)
    assert not [z for z, on_ui in reads if on_ui and z != middle], reads
    assert len({z for z, _ in reads}) > 2
    obj = widget.labels_picker.value.data == widget.propagated_id
    assert mask_iou(obj, truth == cell) >= 0.6


def rough_objects(labels, grow=3):
    """Objects as another tool might give them: each cell dilated by ``grow`` pixels, ids times 10."""
    from scipy import ndimage

    rough = np.zeros(labels.shape, dtype=np.uint32)
    for cell in largest_cells(labels, 8):
        rough[ndimage.binary_dilation(labels == cell, iterations=grow) & (rough == 0)] = cell * 10
    return rough


def ctrl_click(points, where):
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.events import Event
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    common = {"modifiers": ["Control"], "position": tuple(where), "pos": np.array([0, 0]), "is_dragging": False,
              "view_direction": None, "dims_displayed": [0, 1], "dims_point": tuple(where)}
    mouse_press_callbacks(points, ReadOnlyWrapper(Event("mouse_press", **common)))
    mouse_release_callbacks(points, ReadOnlyWrapper(Event("mouse_release", **common)))


def test_ctrl_click_refines_an_existing_object_under_its_own_id(session, qtbot, cells):
    image, labels = cells
    viewer, _, widget = session(image)
    rough = rough_objects(labels)
    target = viewer.add_labels(rough.copy(), name="cellpose")
    widget.labels_picker.value = target
    viewer.layers.selection.active = widget.points_picker.value  # back to clicking, as a user would
    cell = largest_cells(labels, 1)[0]
    ctrl_click(widget.points_picker.value, cell_point(labels, cell))
    settle(qtbot, widget)
    assert len(widget.points_picker.value.data) == 0  # the Ctrl+click is no prompt
    assert widget.preview.target.object_id == cell * 10
    refined = widget.shown_masks()[0]
    assert mask_iou(refined, labels == cell) > mask_iou(rough == cell * 10, labels == cell) + 0.05
    assert viewer.layers.selection.active is widget.points_picker.value
    assert widget.commit() == [cell * 10]
    assert viewer.layers.selection.active is widget.points_picker.value
    changed = target.data != rough
    assert ((target.data[changed] == cell * 10) | (rough[changed] == cell * 10)).all()  # no other object touched
    assert mask_iou(target.data == cell * 10, refined) > 0.95  # all of it, but pixels of other objects
    target.undo()
    assert np.array_equal(target.data, rough)


def with_objects(session, image, labels):
    """The dock on ``image`` with a labels layer of rough objects chosen as its target; (viewer, dock, layer)."""
    viewer, _, widget = session(image)
    target = viewer.add_labels(rough_objects(labels), name="objects")
    widget.labels_picker.value = target
    return viewer, widget, target


def test_points_correct_an_object_being_refined(session, qtbot, cells):
    """Every point joins the refined object's box (tiny-cells takes no mask prompts): the preview is what the
    model gives for the box and the points together."""
    image, labels = cells
    viewer, widget, target = with_objects(session, image, labels)
    cell = largest_cells(labels, 1)[0]
    widget.refine_at(viewer.layers["image"].data_to_world(cell_point(labels, cell)))
    settle(qtbot, widget)
    box = widget.preview.target.box
    predictor = widget.predictor
    assert np.array_equal(widget.shown_masks()[0], predictor.predict(boxes=[box]).best_masks()[0])
    widget.toggle_polarity()
    corner = np.argwhere(target.data == cell * 10)[0].astype(float)  # a negative point on the rough rim
    widget.points_picker.value.add(corner)
    settle(qtbot, widget)
    assert widget.preview.target.object_id == cell * 10 and len(widget.preview.masks) == 1
    expected = predictor.predict(points=[corner], point_labels=[0], boxes=[box]).best_masks()[0]
    assert np.array_equal(widget.shown_masks()[0], expected)
    widget.clear_prompts()
    settle(qtbot, widget)
    assert widget.preview is None and widget.preview_control.target is None


@pytest.mark.parametrize("in_place", [False, True])
def test_refine_all_objects(session, qtbot, cells, in_place):
    image, labels = cells
    viewer, widget, target = with_objects(session, image, labels)
    rough = target.data.copy()
    widget.refine.in_place.value = in_place
    widget.refine.refine_all()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    result = target.data if in_place else widget.refine.result_layer.data
    assert set(np.unique(result)) == set(np.unique(rough))  # the same objects, the same ids
    before = np.median([mask_iou(rough == c * 10, labels == c) for c in largest_cells(labels, 8)])
    after = np.median([mask_iou(result == c * 10, labels == c) for c in largest_cells(labels, 8)])
    assert after > before + 0.05, (before, after)
    if in_place:
        target.undo()
        assert np.array_equal(target.data, rough)
    else:
        assert np.array_equal(target.data, rough)  # the source layer is untouched


def test_refine_all_planes_can_be_cancelled(session, qtbot):
    stack, truth = synthetic_cells((16, 128, 128), seed=777_103, ndim=3)
    viewer, _, widget = session(stack)
    rough = np.stack([rough_objects(plane) for plane in truth])
    target = viewer.add_labels(rough.copy(), name="objects")
    widget.labels_picker.value = target
    widget.refine.in_place.value = widget.refine.whole_stack.value = True
    widget.refine.refine_all()
    widget.refine.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert np.array_equal(target.data, rough) and "cancelled" in widget.status.value


def test_the_labels_layers_selected_label_can_be_refined(session, qtbot, cells):
    image, labels = cells
    viewer, widget, target = with_objects(session, image, labels)
    cell = largest_cells(labels, 2)[1]
    target.selected_label = cell * 10
    widget.refine.selected_button.clicked.emit()
    settle(qtbot, widget)
    assert widget.preview.target.object_id == cell * 10
    assert mask_iou(widget.shown_masks()[0], labels == cell) > 0.8


def test_the_preview_shows_above_labels_and_below_the_prompts(session, qtbot, cells):
    image, labels = cells
    viewer, _, widget = session(image)
    click(widget, labels, largest_cells(labels, 1)[0])
    settle(qtbot, widget)
    widget.commit()
    click(widget, labels, largest_cells(labels, 2)[1])
    settle(qtbot, widget)
    order = list(viewer.layers)
    assert order.index(widget.labels_picker.value) < order.index(widget.preview_layer)
    assert order.index(widget.preview_layer) < order.index(widget.points_picker.value)
