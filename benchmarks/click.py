"""Click to mask on screen: real X clicks in a shown viewer (Xvfb is enough), from the click to the preview drawn,
with where the time goes. Needs xdotool, and an X display or Xvfb (it starts one when there is no display).

For each click, ``xdotool click`` runs while the event loop keeps running (as in napari); times count from the
mouse press the application receives (press, t0): its release (release); napari adds the point (point); the preview
starts its request (request); the decode starts (started: right away on the UI thread when the model decodes quickly
and the plane is embedded, else on a worker); it has the masks (predicted); the preview
layer holds them (drawn); the canvas has repainted (shown, after the event loop ran once more). The X server's
own delay before the press reaches the application is outside napari and not counted. Medians over the clicks, in
milliseconds.

Writes benchmarks/results/click.json (``--results``). ``--clicks 1`` checks the script quickly.

    python benchmarks/click.py [--clicks 7] [--model tiny-cells] [--results PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import results  # noqa: E402  (benchmarks/results.py)

NAMES = ("release", "point", "request", "started", "predicted", "drawn", "shown")
#: The stamps' column names in the results table.
COLUMNS = {"release": "release", "point": "point added", "request": "request", "started": "decode starts",
           "predicted": "masks", "drawn": "preview layer", "shown": "canvas repainted"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=7)
    parser.add_argument("--model", default="tiny-cells")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads (0: torch's default)")
    results.add_option(parser, "click")
    args = parser.parse_args()
    import napari

    import napari_sam.widgets.preview as preview_module
    from napari_sam.demo import open_demo, synthetic_cells
    from napari_sam.testing.x_input import XInput, start_display

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    server = start_display()
    viewer = napari.Viewer(show=True)
    widget = open_demo(viewer, args.model)
    driver = XInput(viewer)
    driver.wait(5)
    deadline = time.time() + 300
    while (widget.predictor is None or widget.busy) and time.time() < deadline:
        driver.wait(0.2)
    image = viewer.layers[0]
    stamps: dict[str, float] = {}
    predict_objects, draw = preview_module.predict_objects, widget.preview_control.draw
    predictor = widget.predictor
    set_image = predictor.set_image
    threads = []

    def timed_set_image(*a, **k):
        stamps.setdefault("started", time.perf_counter())
        threads.append(threading.current_thread() is threading.main_thread())
        return set_image(*a, **k)

    predictor.set_image = timed_set_image
    update = widget.preview_control.update

    def timed_predict(*a, **k):
        result = predict_objects(*a, **k)
        stamps["predicted"] = time.perf_counter()
        return result

    def timed_draw(*a, **k):
        draw(*a, **k)
        stamps["drawn"] = time.perf_counter()

    def timed_update(*a, **k):
        stamps.setdefault("request", time.perf_counter())
        update(*a, **k)

    preview_module.predict_objects = timed_predict
    widget.preview_control.draw = timed_draw
    widget.preview_control.update = timed_update
    points = widget.points_picker.value
    points.events.data.connect(lambda event: stamps.setdefault("point", time.perf_counter()))
    _, truth = synthetic_cells((384, 512), seed=2024)
    import numpy as np
    from qtpy.QtCore import QEvent, QObject

    class PressTimes(QObject):
        """Stamps the first mouse press and release the application receives."""

        def eventFilter(self, watched, event):  # noqa: N802 (Qt's name)
            if event.type() == QEvent.Type.MouseButtonPress:
                stamps.setdefault("press", time.perf_counter())
            elif event.type() == QEvent.Type.MouseButtonRelease:
                stamps.setdefault("release", time.perf_counter())
            return False

    press_times = PressTimes()
    driver.app.installEventFilter(press_times)
    cells = [label for label in np.unique(truth)[1:] if (truth == label).sum() > 600][: args.clicks]
    rows = []
    for label in cells:
        row, col = np.argwhere(truth == label).mean(axis=0)
        widget.clear_prompts()
        driver.wait(0.5)
        driver.move_to(image, (row, col))
        driver.wait(0.3)
        stamps.clear()
        sent = time.perf_counter()
        clicker = subprocess.Popen(["xdotool", "click", "1"])
        while "drawn" not in stamps and time.perf_counter() - sent < 10:
            driver.app.processEvents()
            time.sleep(0.001)  # an idle event loop, as napari's: the worker gets the interpreter
        driver.app.processEvents()
        stamps["shown"] = time.perf_counter()
        clicker.wait()
        start = stamps.get("press", sent)
        rows.append({name: 1000 * (stamps.get(name, float("nan")) - start) for name in NAMES})
        driver.wait(0.3)
    inline = sum(threads[-len(rows):]) if rows else 0
    print(f"{len(rows)} clicks, model {args.model} ({inline} decoded on the UI thread, the decoder's quickest "
          f"{1000 * (predictor.decode_seconds() or float('nan')):.1f} ms); milliseconds after the application received "
          "the press (median):")
    for name in NAMES:
        print(f"  {name:10s} {statistics.median(r[name] for r in rows):7.1f}")
    viewer.close()
    if server is not None:
        server.terminate()
    medians = {name: statistics.median(r[name] for r in rows) for name in NAMES}
    model = os.path.basename(os.path.normpath(args.model)) if os.path.isdir(args.model) else args.model
    results.write(args.results, "click", "Click to mask on screen: real X clicks in a shown viewer", [
        results.table(f"{len(rows)} clicks on the demo image, model {model}", ["", *(COLUMNS[n] for n in NAMES)],
                      [[f"{model} ({inline} of {len(rows)} decoded on the UI thread)",
                        *(f"{medians[n]:.0f}" for n in NAMES)]],
                      notes="Medians in milliseconds after the application received the mouse press.")],
        figures={"model": model, "clicks": rows, "medians_ms": medians, "decoded_on_ui_thread": inline,
                 "decode_seconds": predictor.decode_seconds()}, packages=("napari",))


if __name__ == "__main__":
    main()
