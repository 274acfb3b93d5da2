"""The docks go away cleanly: removed from a viewer, with the viewer closed, or with the interpreter exiting while
their workers run."""

import os
import subprocess
import sys
import textwrap

import numpy as np


def test_a_script_that_ends_with_the_viewer_open_exits_cleanly(tmp_path):
    """A script that opens the demo and ends (no ``napari.run()``) while the model loads on a worker: once Qt
    aborted the process (SIGABRT) as the load failed in the interpreter's shutdown and reported to deleted Qt
    objects, or the dock's timer was stopped after Qt had deleted it."""
    script = tmp_path / "ends.py"
    script.write_text(textwrap.dedent("""
        import napari
        from napari_sam.demo import open_demo

        viewer = napari.Viewer(show=False)
        widget = open_demo(viewer)
        assert widget.busy  # the model is loading on a worker as the script ends
    """))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for _ in range(2):  # it failed in 3 runs of 4
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]


def test_a_removed_dock_stops_listening_and_the_viewer_closes_cleanly(make_napari_viewer, qtbot):
    """A dock removed while its model is loaded (and the view moving) stops listening to the viewer; closing the
    viewer afterwards raises nothing."""
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((300, 300), np.uint16), name="image")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    widget.model_picker.native.setCurrentText("tiny-cells")
    widget.load_model()
    qtbot.waitUntil(lambda: widget.predictor is not None and not widget.busy, timeout=60_000)
    viewer.camera.zoom = 2  # starts the timer that embeds the tiles in view once the camera rests
    viewer.window.remove_dock_widget(dock)  # napari keeps the widget, parentless
    assert widget.model.closed
    embedded = widget.embedded_index
    viewer.add_image(np.ones((300, 300), np.uint16), name="another")  # no longer heard
    viewer.camera.zoom = 3
    qtbot.wait(500)
    assert widget.embedded_index == embedded and not widget.busy
    viewer.close()


def test_a_run_of_a_dock_that_goes_away_is_cancelled_and_cleaned_up(qtbot):
    """A dock removed while its run works: the run stops at its next step, and what it made for its result (a
    labels folder on disk, say) is cleaned up, also when the run finished before it saw the cancel."""
    import time

    from magicgui.widgets import PushButton

    from napari_sam.core.errors import SegmentationCancelled
    from napari_sam.widgets.cancellable_task import CancellableTask

    def start(worker, cancel=None):
        worker.start()

    task = CancellableTask("A run", PushButton(), PushButton(), start, lambda message: None)
    shown, cleaned, steps = [], [], []

    def checks(report, cancelled):
        while not cancelled():
            steps.append(1)
            time.sleep(0.01)
        raise SegmentationCancelled()

    task.run(checks, shown.append, lambda: cleaned.append("cancelled"))
    qtbot.waitUntil(lambda: bool(steps), timeout=5000)
    task.close()
    qtbot.waitUntil(lambda: bool(cleaned), timeout=5000)
    assert cleaned == ["cancelled"] and not shown

    task = CancellableTask("A run", PushButton(), PushButton(), start, lambda message: None)
    task.run(lambda report, cancelled: time.sleep(0.3) or "labels", shown.append, lambda: cleaned.append("late"))
    task.close()  # before it finishes, without looking at the cancel
    qtbot.waitUntil(lambda: len(cleaned) == 2, timeout=5000)
    assert cleaned == ["cancelled", "late"] and not shown
