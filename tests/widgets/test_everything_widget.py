"""The Segment everything widget under Xvfb: result layer with features, cancel, stacks."""

import numpy as np
import pytest

from napari_sam.core.objects import mask_iou
from napari_sam.core.settings import EverythingSettings
from napari_sam.demo import synthetic_cells

WIDGET = ("napari-sam", "Segment everything")


def test_run_adds_a_labels_layer_with_features(everything_dock, qtbot):
    image, truth = synthetic_cells((200, 240), seed=910_001)
    viewer, layer, widget = everything_dock(image, scale=(2.0, 2.0), translate=(5.0, 0.0))
    assert widget.settings["box_nms_thresh"].tooltip
    widget.run()
    qtbot.waitUntil(lambda: widget.result_layer is not None and not widget.busy, timeout=120_000)
    result = widget.result_layer
    assert result.data.shape == (200, 240) and np.allclose(result.scale, (2.0, 2.0))
    features = result.features
    assert {"label", "area", "score", "stability", "box_row_min", "box_col_max"} <= set(features.columns)
    assert len(features) == result.data.max() >= 0.6 * truth.max()
    label = int(features["label"].iloc[0])
    assert (result.data == label).sum() <= features["area"].iloc[0]


def test_cancel_adds_nothing(everything_dock, qtbot):
    image, _ = synthetic_cells((200, 240), seed=910_002)
    viewer, layer, widget = everything_dock(image)
    widget.settings["points_per_side"].value = 64
    widget.settings["points_per_batch"].value = 8
    layers_before = len(viewer.layers)
    widget.run()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert widget.result_layer is None and len(viewer.layers) == layers_before
    assert "cancelled" in widget.status.value
    assert widget.run_button.enabled


def test_every_plane_of_a_stack(everything_dock, qtbot):
    stack, _ = synthetic_cells((3, 128, 128), seed=910_003, ndim=3)
    viewer, layer, widget = everything_dock(stack)
    widget.whole_stack.value = True
    widget.as_3d.value = False  # plane by plane: ids of their own on every plane
    widget.run()
    qtbot.waitUntil(lambda: widget.result_layer is not None and not widget.busy, timeout=120_000)
    result = widget.result_layer
    assert result.data.shape == stack.shape
    features = result.features
    assert len(set(features["plane"])) >= 2 and set(features["plane"]) <= {(0,), (1,), (2,)}
    for plane, label in zip(features["plane"], features["label"]):  # ids are unique across planes
        assert set(np.nonzero(result.data == label)[0]) <= {plane[0]}


def test_every_plane_as_3d_objects_gives_one_id_per_cell_through_the_stack(everything_dock, qtbot):
    stack, truth = synthetic_cells((12, 160, 160), seed=910_013, ndim=3)
    viewer, layer, widget = everything_dock(stack)
    widget.whole_stack.value = True
    assert widget.as_3d.value  # the default for stacks
    widget.run()
    qtbot.waitUntil(lambda: widget.result_layer is not None and not widget.busy, timeout=240_000)
    result, features = widget.result_layer.data, widget.result_layer.features
    assert len(features) == len(np.unique(result)) - 1 and list(features["index"]) == list(features["label"])
    assert {"first_plane", "last_plane"} <= set(features.columns)
    for cell in np.unique(truth)[1:]:  # every cell found on most of its planes is one 3D object
        inside = result[truth == cell]
        found = inside[inside > 0]
        if found.size >= 0.5 * inside.size:
            assert np.bincount(found).max() >= 0.8 * found.size, cell
    row = features.iloc[0]
    planes = np.nonzero((result == row["label"]).any(axis=(1, 2)))[0]
    assert (planes.min(), planes.max()) == (row["first_plane"], row["last_plane"])


def test_the_demo_with_the_docks_defaults_finds_the_cells(make_napari_viewer, qtbot, notifications):
    """A newcomer's first run: the demo sample, the bundled model, every setting as the dock shows it."""
    from napari_sam.demo import synthetic_cells_sample

    viewer = make_napari_viewer()
    viewer.open_sample("napari-sam", "synthetic-cells")
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.model_picker.native.setCurrentText("tiny-cells")
    widget.load_model()
    qtbot.waitUntil(lambda: widget.predictor is not None and not widget.busy, timeout=60_000)
    assert "tiny-cells" in widget.in_effect.value and "method: instances (its head)" in \
        widget.in_effect.value
    recommended = widget.predictor.recommended.everything
    assert widget.form.value() == recommended and recommended.pred_iou_thresh < 0.88
    widget.run()
    qtbot.waitUntil(lambda: widget.result_layer is not None and not widget.busy, timeout=120_000)
    truth = synthetic_cells((384, 512), seed=2024)[1]  # the sample's own ground truth
    assert np.array_equal(synthetic_cells_sample()[0][0], viewer.layers[0].data)
    found = widget.result_layer.data
    cells = [c for c in range(1, truth.max() + 1) if (truth == c).sum() >= 30]
    hits = sum(max(((found == k) & (truth == c)).sum() / ((found == k) | (truth == c)).sum()
                   for k in np.unique(found[truth == c]) if k) >= 0.7 for c in cells if (found[truth == c] > 0).any())
    assert hits >= 0.6 * len(cells), (hits, len(cells))
    assert not widget.settings["points_per_side"].enabled and widget.settings["foreground_thresh"].enabled
    widget.settings["method"].value = "grid"
    assert widget.in_effect.value == "Settings: edited; method: grid."
    assert widget.settings["points_per_side"].enabled and not widget.settings["foreground_thresh"].enabled
    widget.reset_button.clicked.emit()
    assert widget.form.value() == recommended


def test_a_checkpoint_without_a_head_is_told_how_to_get_one(make_napari_viewer, qtbot, tiny_checkpoint,
                                                            notifications):
    viewer = make_napari_viewer()
    viewer.add_image(synthetic_cells((64, 64), seed=3)[0])
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.model_picker.native.setCurrentText(str(tiny_checkpoint))
    widget.load_model()
    qtbot.waitUntil(lambda: widget.predictor is not None and not widget.busy, timeout=60_000)
    assert "method: grid" in widget.in_effect.value
    widget.settings["method"].value = "instances"
    layers = len(viewer.layers)
    widget.run()
    assert not widget.busy and len(viewer.layers) == layers
    assert any("no instance head" in str(n.message) and "napari-sam train --instances" in str(n.message)
               for n in notifications())


def test_a_run_that_finds_nothing_says_what_to_lower(everything_dock, qtbot):
    image, _ = synthetic_cells((120, 160), seed=910_004)
    viewer, layer, widget = everything_dock(image)
    widget.settings["pred_iou_thresh"].value = 1.0
    layers = len(viewer.layers)
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert widget.result_layer is None and len(viewer.layers) == layers
    assert "no objects" in widget.status.value and "min predicted IoU" in widget.status.value


def test_a_checkpoint_without_recommendations_gets_metas_defaults(make_napari_viewer, qtbot, tiny_checkpoint):
    from napari_sam.core.settings import EverythingSettings

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((50, 50), np.uint8))
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.model_picker.native.setCurrentText(str(tiny_checkpoint))
    widget.load_model()
    qtbot.waitUntil(lambda: widget.predictor is not None and not widget.busy, timeout=60_000)
    assert widget.form.value() == EverythingSettings() and "Meta's defaults" in widget.in_effect.value


def test_a_lazy_image_larger_than_two_tiles_is_segmented_in_tiles_read_on_workers(everything_dock, qtbot):
    """An array-like over twice tiny-cells' tile (1024² for a 256-pixel model) that refuses to be read whole: the
    dock reads it on its worker tile by tile (and in prompt windows of at most two tiles, where a candidate that tiles
    cut is decoded again), and every cell is found once."""
    from helpers import Recorded, tiny_cells_tile

    tile = tiny_cells_tile()
    side = 2 * tile + 512
    image, truth = synthetic_cells((side, side), seed=910_006, radius_range=(10.0, 15.0),
                                   n_cells=round(300 * side**2 / 1024**2))
    lazy = Recorded(image)
    viewer, layer, widget = everything_dock(lazy, contrast_limits=(0, float(image.max())))
    widget.settings["pred_iou_thresh"].value = 0.7
    widget.settings["stability_score_thresh"].value = 0.8
    lazy.reads.clear()
    widget.run()
    qtbot.waitUntil(lambda: widget.result_layer is not None and not widget.busy, timeout=240_000)
    ours = [shape for thread, _, shape in lazy.reads if thread != "MainThread"]
    assert len(ours) >= 16 and all(rows <= 2 * tile and cols <= 2 * tile for rows, cols in ours), ours[:5]
    assert sum(max(shape) <= tile for shape in ours) >= 0.8 * len(ours)
    found = widget.result_layer.data
    assert found.shape == (side, side) and len(widget.result_layer.features) == found.max()
    cells = np.unique(truth)[1:]
    best = [max((mask_iou(found == k, truth == cell) for k in np.unique(found[truth == cell]) if k), default=0.0)
            for cell in cells[:: max(1, len(cells) // 60)]]
    assert np.mean(np.array(best) >= 0.7) >= 0.8, np.round(best, 2)


@pytest.mark.slow
def test_export_batch_run_gives_the_docks_result_on_the_folder(make_napari_viewer, qtbot, tmp_path):
    import shlex

    import tifffile

    from napari_sam.cli import main
    from napari_sam.core.image import read_image

    folder = tmp_path / "plate"
    folder.mkdir()
    image = synthetic_cells((160, 200), seed=910_050)[0]
    tifffile.imwrite(folder / "well_a1.tif", image)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(folder / "well_a1.tif"))
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.model_picker.native.setCurrentText("tiny-cells")
    widget.load_model()
    qtbot.waitUntil(lambda: widget.predictor is not None and not widget.busy, timeout=60_000)
    widget.settings["points_per_side"].value = 12
    widget.run()
    qtbot.waitUntil(lambda: widget.result_layer is not None and not widget.busy, timeout=120_000)
    assert viewer.layers.selection.active is layer  # exporting below leaves the layers alone

    config = widget.batch_export.config()
    assert config.batch.model == "tiny-cells" and config.batch.contrast == "napari"
    recommended = widget.predictor.recommended.everything
    assert config.everything.points_per_side == 12  # as set in the dock; the thresholds as recommended
    assert config.everything.pred_iou_thresh == recommended.pred_iou_thresh != EverythingSettings().pred_iou_thresh
    command = widget.batch_export.save(tmp_path / "settings.json", config, layer)
    words = shlex.split(command)
    assert words[:3] == ["napari-sam", "segment", str(folder)] and "--settings" in words
    assert main([*words[1:], "--workers", "1", "--no-progress"]) == 0
    labels = np.asarray(read_image(tmp_path / "plate-segmented" / "well_a1_labels.ome.tif"))
    np.testing.assert_array_equal(labels, widget.result_layer.data)
