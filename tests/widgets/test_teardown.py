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
