"""The Image series dock with a real, shown napari: images annotated with real clicks and keys (xdotool), moved
through, closed and reopened; a session killed right after a commit; a batch run's results corrected; an unreadable
file skipped; a second session refused."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile

from napari_sam.batch import Series, run_batch
from napari_sam.batch.series import (
    DONE,
    FAILED,
    IN_PROGRESS,
    NOT_STARTED,
    SERIES_FILE,
    labels_file,
    read_labels,
)
from napari_sam.core.objects import mask_iou
from napari_sam.demo import synthetic_cells
from napari_sam.widgets import open_series

from helpers import batch_config, largest_cells

#: The window's size: two docks and a canvas, on pytest-xvfb's screen (set in pyproject.toml).
WINDOW = (1500, 900)


@pytest.fixture()
def fields(tmp_path):
    """Three images of cells and an unreadable one, first in the series: (folder, {name: true labels})."""
    folder = tmp_path / "fields"
    folder.mkdir()
    truth = {}
    for index in range(3):
        image, labels = synthetic_cells((120, 150), seed=991_000 + index, radius_range=(12.0, 16.0), n_cells=6)
        tifffile.imwrite(folder / f"field_{index}.tif", image)
        truth[f"field_{index}"] = labels
    (folder / "a_broken.tif").write_bytes(b"II*\x00 not a tiff")
    return folder, truth


def ready(qtbot, dock, index):
    """Wait until the series shows image ``index``, the model is loaded and nothing runs."""
    qtbot.waitUntil(lambda: dock.current == index and dock.segment.predictor is not None
                    and not dock.segment.busy and dock.segment.points_picker.value is not None, timeout=120_000)


def saved_labels(out, name):
    """The labels saved for image ``name`` (OME-TIFF or OME-zarr), or None."""
    path = labels_file(out, name)
    return None if path is None else np.asarray(read_labels(path)[...])


#: The whole loop driven by a person (real X clicks and keys, xdotool) in a shown viewer, on its own X display: three
#: images annotated, next, previous, mark done, close and reopen. Prints what it saw as JSON.
BY_HAND = """
import json, os, sys, numpy as np, tifffile
from napari_sam.testing.x_input import XInput, start_display
folder, out, display = sys.argv[1], sys.argv[2], sys.argv[3]
os.environ.pop("DISPLAY", None)
server = start_display((1600, 1000), display)
import napari
from napari_sam.widgets import open_series
seen = {}
viewer = napari.Viewer(show=True)
dock = open_series(viewer, [folder], out, model="tiny-cells")
seen["first"] = [image.status for image in dock.series.images]
person = XInput(viewer, (1500, 900))
def ready(index):
    person.wait_until(lambda: dock.current == index and dock.segment.predictor is not None
                      and not dock.segment.busy and dock.segment.points_picker.value is not None, f"image {index}")
clicks = json.loads(sys.argv[4])
for index, (row, col) in enumerate(clicks, start=1):
    ready(index)
    person.fit()
    person.click(dock.image_layer, (row, col))
    person.wait_until(lambda: dock.segment.preview is not None and dock.segment.shown_masks().any()
                      and not dock.segment.busy, "the preview")
    person.key("c")
    person.wait_until(lambda: dock.series.images[index].objects, "the saved labels")
    if index < len(clicks):
        person.key("Next")
seen["last"] = dock.current
person.key("Prior")
ready(2)
seen["back"] = dock.current
seen["back_labels"] = int((np.asarray(dock.labels_layer.data) > 0).sum())
person.press(dock.done_button)
ready(3)
seen["after_done"] = [image.status for image in dock.series.images]
viewer.close()
viewer = napari.Viewer(show=True)
again = open_series(viewer, [folder], out, model="tiny-cells")
person = XInput(viewer, (1500, 900))
dock = again
ready(1)
seen["reopened"] = [image.status for image in again.series.images]
seen["reopened_current"] = again.current
seen["reopened_labels"] = int((np.asarray(again.labels_layer.data) > 0).sum())
viewer.close()
server.terminate() if server is not None else None
print(json.dumps(seen))
"""


@pytest.mark.slow
def test_three_images_annotated_with_clicks_and_keys_then_moved_through_closed_and_reopened(fields, tmp_path):
    folder, truth = fields
    out = tmp_path / "out"
    clicks = []
    for name in ("field_0", "field_1", "field_2"):
        rows, cols = np.nonzero(truth[name] == largest_cells(truth[name], 1)[0])
        clicks.append([float(np.median(rows)), float(np.median(cols))])
    run = subprocess.run([sys.executable, "-c", BY_HAND, str(folder), str(out), f":{90 + os.getpid() % 9}",
                          json.dumps(clicks)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["first"][0] == FAILED  # the unreadable file is skipped and marked failed
    assert seen["last"] == 3 and seen["back"] == 2  # PageDown, PageDown, PageUp
    assert seen["back_labels"] == int((saved_labels(out, "field_1") > 0).sum()) > 0  # its labels came back
    assert seen["after_done"] == [FAILED, IN_PROGRESS, DONE, IN_PROGRESS]  # done, and on to the next not done
    assert seen["reopened"] == [FAILED, IN_PROGRESS, DONE, IN_PROGRESS] and seen["reopened_current"] == 1
    assert seen["reopened_labels"] == int((saved_labels(out, "field_0") > 0).sum())
    for name, (row, col) in zip(("field_0", "field_1", "field_2"), clicks):
        cell = truth[name][int(row), int(col)]
        assert mask_iou(saved_labels(out, name) > 0, truth[name] == cell) >= 0.8, name


def test_undo_and_a_brush_edit_are_saved_and_the_settings_file_applies(make_napari_viewer, qtbot, fields,
                                                                         tmp_path):
    from napari_sam.batch import RunConfig
    from napari_sam.core.settings import PropagationSettings

    folder, truth = fields
    out = tmp_path / "out"
    settings = RunConfig(propagation=PropagationSettings(min_area=77)).to_dict()
    dock = open_series(make_napari_viewer(), [str(folder / "field_0.tif")], out, model="tiny-cells",
                       settings=settings)
    ready(qtbot, dock, 0)
    assert dock.segment.propagation.settings.controls["min_area"].value == 77  # not the checkpoint's own
    assert dock.series.settings == settings
    labels = dock.labels_layer
    labels.paint((40, 40), 9)  # a dab of napari's own brush
    qtbot.waitUntil(lambda: (saved_labels(out, "field_0") == 9).any(), timeout=2_000)
    labels.undo()  # napari reports an undo only as a redraw: saved after a moment
    qtbot.waitUntil(lambda: not (saved_labels(out, "field_0") == 9).any(), timeout=5_000)
    assert dock.series.images[0].status == IN_PROGRESS and dock.series.images[0].objects == 0
    dock.viewer.window.remove_dock_widget(dock.native)  # the dock closed, the viewer still open...
    qtbot.waitUntil(lambda: dock.series is None, timeout=5_000)
    Series([str(folder / "field_0.tif")], out).close()  # ...lets the folder go


def test_a_session_killed_right_after_a_commit_keeps_the_commit(fields, tmp_path):
    folder, truth = fields
    out = tmp_path / "out"
    cell = largest_cells(truth["field_0"], 1)[0]
    row, col = np.argwhere(truth["field_0"] == cell).mean(axis=0)
    script = textwrap.dedent(f"""
        import time, napari
        from qtpy.QtWidgets import QApplication
        from napari_sam.widgets import open_series
        viewer = napari.Viewer(show=False)
        dock = open_series(viewer, [{str(folder / "field_0.tif")!r}], {str(out)!r}, model="tiny-cells")
        app = QApplication.instance()
        def wait(condition):
            while not condition():
                app.processEvents(); time.sleep(0.02)
        wait(lambda: dock.segment.predictor is not None and dock.segment.points_picker.value is not None
             and not dock.segment.busy)
        dock.segment.points_picker.value.add([{row:.1f}, {col:.1f}])
        wait(lambda: dock.segment.preview is not None and dock.segment.preview_control.settled
             and not dock.segment.busy)
        dock.segment.commit()
        print("committed", flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert process.stdout.readline().strip() == "committed"
    finally:
        process.kill()  # SIGKILL, right after the commit
        process.wait()
    labels = saved_labels(out, "field_0")  # the file reads...
    assert mask_iou(labels > 0, truth["field_0"] == cell) >= 0.8  # ...and holds the commit
    record = (out / SERIES_FILE).read_text()
    assert '"corrected": true' in record


def test_a_batch_runs_results_corrected_in_the_dock_are_kept_by_the_next_run(dask_cluster, make_napari_viewer,
                                                                             qtbot, fields, tmp_path):
    scheduler, _ = dask_cluster
    folder, truth = fields
    (folder / "a_broken.tif").unlink()
    out = tmp_path / "results"
    run_batch([str(folder)], str(out), batch_config(), scheduler=scheduler, progress=False)
    found = tifffile.imread(out / "field_1_labels.ome.tif")
    dock = open_series(make_napari_viewer(), [str(folder)], out)
    ready(qtbot, dock, 0)
    assert dock.segment.predictor.checkpoint == "tiny-cells"  # the batch run's model
    assert [image.status for image in dock.series.images] == [IN_PROGRESS, NOT_STARTED, NOT_STARTED]
    dock.next()
    ready(qtbot, dock, 1)
    assert np.array_equal(dock.labels_layer.data, found)  # the batch run's labels, to correct
    dock.labels_layer.paint((10, 10), 123)
    dock.close_series()
    before = (out / "field_1_labels.ome.tif").read_bytes()
    again = run_batch([str(folder)], str(out), batch_config(), scheduler=scheduler, overwrite=True, progress=False)
    assert {e["name"]: e["status"] for e in again.values["images"]}["field_1"] == "kept"
    assert (out / "field_1_labels.ome.tif").read_bytes() == before


def test_a_stack_and_a_zarr_image_are_annotated_in_the_series(make_napari_viewer, qtbot, tmp_path):
    """A z-stack (a 3D TIFF) and a zarr image, lazily read: a commit on a plane of the stack is saved as a 3D labels
    file; the zarr image's labels are saved too."""
    import zarr

    folder = tmp_path / "mixed"
    folder.mkdir()
    stack, stack_truth = synthetic_cells((4, 96, 128), seed=991_100, ndim=3)
    tifffile.imwrite(folder / "a_stack.tif", stack)
    image, image_truth = synthetic_cells((96, 128), seed=991_101, radius_range=(12.0, 16.0), n_cells=5)
    zarr.create_array(folder / "b_plain.zarr", shape=image.shape, chunks=(48, 64), dtype=image.dtype)[...] = image
    out = tmp_path / "out"
    dock = open_series(make_napari_viewer(), [str(folder)], out, model="tiny-cells")
    ready(qtbot, dock, 0)
    assert dock.image_layer.ndim == 3 and dock.labels_layer.data.shape == stack.shape
    viewer, segment = dock.viewer, dock.segment
    viewer.dims.set_current_step(0, 2)
    cell = largest_cells(stack_truth[2], 1)[0]
    row, col = np.argwhere(stack_truth[2] == cell).mean(axis=0)
    segment.points_picker.value.add([2, row, col])
    qtbot.waitUntil(lambda: segment.preview is not None and segment.preview_control.settled and not segment.busy,
                    timeout=60_000)
    segment.commit()
    saved = saved_labels(out, "a_stack")
    assert saved.shape == stack.shape and not saved[[0, 1, 3]].any()
    assert mask_iou(saved[2] > 0, stack_truth[2] == cell) >= 0.8
    dock.next()
    ready(qtbot, dock, 1)
    assert dock.image_layer.ndim == 2 and np.array_equal(np.asarray(dock.image_layer.data), image)
    cell = largest_cells(image_truth, 1)[0]
    row, col = np.argwhere(image_truth == cell).mean(axis=0)
    segment.points_picker.value.add([row, col])
    qtbot.waitUntil(lambda: segment.preview is not None and segment.preview_control.settled and not segment.busy,
                    timeout=60_000)
    segment.commit()
    assert mask_iou(saved_labels(out, "b_plain") > 0, image_truth == cell) >= 0.8
    dock.close_series()


def test_the_train_dock_learns_from_the_open_series(fields, make_napari_viewer, qtbot, tmp_path):
    """What a person corrected in the series is what the Train dock offers; closing the series takes it away."""
    folder, truth = fields
    out = tmp_path / "out"
    dock = open_series(make_napari_viewer(), [str(folder)], out, model="tiny-cells")
    ready(qtbot, dock, 1)  # the broken file first, skipped
    dock.labels_layer.data = truth["field_0"].astype(dock.labels_layer.data.dtype)
    dock.save(force=True)
    _, train = dock.viewer.window.add_plugin_dock_widget("napari-sam", "Train")
    train.source.value = "the image series"
    examples = train.examples()
    assert [e.name for e in examples] == ["field_0"] and np.array_equal(examples[0].labels, truth["field_0"])
    dock.close_series()
    with pytest.raises(ValueError, match="No image series is open"):
        train.examples()
