"""Real X input into a shown napari viewer, as a person gives it: mouse clicks at data pixels, button presses and key
presses sent through the X server (``xdotool``) while the viewer's Qt event loop runs. For the screenshots script
and the click benchmark, which use the GUI as a person does; the tests drive the widgets directly.

Needs an X display (an Xvfb server is enough: :func:`start_display` starts one) and xdotool
(``apt-get install xvfb xdotool``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time


def start_display(size: tuple[int, int] = (1600, 1000), display: str = ":97") -> subprocess.Popen | None:
    """Start an Xvfb server of ``size`` as ``DISPLAY`` when there is no display; returns its process (to terminate
    at the end), or None when a display was there already.

    Raises:
        RuntimeError: no display and no Xvfb.
    """
    if os.environ.get("DISPLAY"):
        return None
    if shutil.which("Xvfb") is None:
        raise RuntimeError("No X display and no Xvfb: apt-get install xvfb, or run under an X server.")
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", f"{size[0]}x{size[1]}x24"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["DISPLAY"] = display
    time.sleep(1.0)
    return server


class XInput:
    """Real X input into ``viewer`` (a shown napari Viewer, its window resized to ``window_size`` at the screen's
    top left), pumping its Qt event loop while it waits.

    Raises:
        RuntimeError: xdotool is missing.
    """

    def __init__(self, viewer, window_size: tuple[int, int] = (1500, 900)):
        from qtpy.QtWidgets import QApplication

        if shutil.which("xdotool") is None:
            raise RuntimeError("xdotool is needed to click and type: apt-get install xdotool.")
        self.viewer, self.app = viewer, QApplication.instance()
        window = viewer.window._qt_window
        window.resize(*window_size)  # without a window manager the default window can leave the canvas 0 px wide
        window.move(0, 0)
        self.canvas = viewer.window._qt_viewer.canvas.native

    def wait(self, seconds: float) -> None:
        """Let napari and its workers run for ``seconds``."""
        end = time.time() + seconds
        while time.time() < end:
            self.app.processEvents()
            time.sleep(0.02)

    def wait_until(self, condition, what: str, seconds: float = 120.0) -> None:
        """Let napari run until ``condition()`` holds, then half a second more.

        Raises:
            TimeoutError: naming ``what`` when it does not hold within ``seconds``.
        """
        end = time.time() + seconds
        while not condition():
            if time.time() > end:
                raise TimeoutError(f"gave up waiting for {what} after {seconds:.0f} s")
            self.wait(0.1)
        self.wait(0.5)

    def fit(self) -> None:
        """Fit the layers into the canvas as the window and its docks left it."""
        self.wait(0.5)
        self.viewer.reset_view()
        self.wait(0.5)

    def screen_position(self, layer, data_point) -> tuple[int, int]:
        """The screen (x, y) of ``data_point`` (``layer``'s data coordinates, the last two (row, col)) in a 2D view.

        Raises:
            ValueError: the point is outside the visible canvas.
        """
        world = layer.data_to_world(tuple(data_point))
        camera = self.viewer.scene.camera
        (centre_row, centre_col), zoom = camera.center[-2:], camera.zoom
        x = (world[-1] - centre_col) * zoom + self.canvas.width() / 2
        y = (world[-2] - centre_row) * zoom + self.canvas.height() / 2
        if not (0 <= x < self.canvas.width() and 0 <= y < self.canvas.height()):
            raise ValueError(f"{tuple(data_point)} is not on the visible canvas: pan or zoom first")
        origin = self.canvas.mapToGlobal(self.canvas.rect().topLeft())
        return int(origin.x() + x), int(origin.y() + y)

    def move_to(self, layer, data_point) -> None:
        """Move the mouse over ``data_point`` of ``layer``."""
        x, y = self.screen_position(layer, data_point)
        xdotool("mousemove", str(x), str(y))

    def click(self, layer, data_point, modifiers: str = "") -> None:
        """A left click on ``data_point`` of ``layer``; ``modifiers`` such as "alt" or "ctrl" are held down."""
        self.move_to(layer, data_point)
        if modifiers:
            xdotool("keydown", modifiers)
        xdotool("click", "1")
        if modifiers:
            xdotool("keyup", modifiers)
        self.wait(0.3)

    def drag(self, layer, data_points, step_seconds: float = 0.03) -> None:
        """Press the left button on the first of ``data_points`` (``layer``'s data coordinates), move through the
        others, and release it on the last: a freehand stroke."""
        self.move_to(layer, data_points[0])
        xdotool("mousedown", "1")
        for point in data_points[1:]:
            self.wait(step_seconds)
            self.move_to(layer, point)
        self.wait(step_seconds)
        xdotool("mouseup", "1")
        self.wait(0.3)

    def press(self, button) -> None:
        """Click the centre of a button (a magicgui widget or a Qt one)."""
        native = getattr(button, "native", button)
        where = native.mapToGlobal(native.rect().center())
        xdotool("mousemove", str(where.x()), str(where.y()), "click", "1")
        self.wait(0.3)

    def key(self, keys: str) -> None:
        """Press a key or a chord, as xdotool names them: "c", "shift+c", "ctrl+z"."""
        xdotool("key", keys)
        self.wait(0.3)


def xdotool(*args: str) -> None:
    """Run ``xdotool`` with ``args``."""
    subprocess.run(["xdotool", *args], check=True)
