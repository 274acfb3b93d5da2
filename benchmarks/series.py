"""Moving on in an image series: the time from "next" to the next image shown, and to its embedding ready for a
click, when the dock read and embedded it ahead (while the person worked on the image before) against when it did
not, in one process, with the real Image series dock of a napari viewer.

For each model (the bundled tiny-cells, and SAM ViT-B's architecture with seeded random weights at its 1024-pixel
input), a series of synthetic 512 x 512 images is opened. For the first images the benchmark waits, after each
image, until the next one has been read and embedded ahead, then presses Next; for the others the reading ahead is
switched off and Next reads and embeds on demand. The embedding store is off (it would serve images seen before).

Writes benchmarks/results/series.json (``--results``).

Usage: ``python benchmarks/series.py [--images 4] [--size 512] [--models tiny-cells vit-b] [--results PATH]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tifffile  # noqa: E402

from napari_sam.demo import synthetic_cells  # noqa: E402
from napari_sam.testing.random_weights import random_sam, sam_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results  # noqa: E402  (benchmarks/results.py)


def wait(app, condition, what: str, seconds: float = 600.0) -> None:
    end = time.time() + seconds
    while not condition():
        if time.time() > end:
            raise TimeoutError(f"gave up waiting for {what}")
        app.processEvents()
        time.sleep(0.002)


def measure(model: str, folder: Path, out: Path, images: int) -> dict:
    """{"ahead": [(shown s, ready s), ...], "on demand": [...]} for ``images`` moves of each kind."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_sam.widgets import open_series

    viewer = napari.Viewer(show=False)
    app = QApplication.instance()
    dock = open_series(viewer, [str(folder)], out, model=model)
    session = dock.segment.session
    ready: dict[str, float] = {}
    session.embedded.connect(lambda layer, index, ran: ready.setdefault(layer.name, time.perf_counter()))
    wait(app, lambda: dock.segment.predictor is not None and dock.image_layer is not None
         and dock.image_layer.name in ready and not dock.segment.busy, "the model and the first image")
    session.set_store(None, 1.0)  # no store: an image embedded before must not be found there
    timings: dict[str, list] = {"ahead": [], "on demand": []}
    for kind in ("ahead", "on demand"):
        if kind == "on demand":
            session.embedded.disconnect(dock._on_embedded)  # no more reading and embedding ahead
        for _ in range(images):
            following = dock.current + 1
            if kind == "ahead":
                wait(app, lambda f=following: dock._ahead is not None and dock._ahead[0] == f
                     and not dock.segment.busy, "the next image read and embedded ahead")
            else:
                wait(app, lambda: not dock.segment.busy, "the dock to rest")
            name = dock.series.images[following].name
            start = time.perf_counter()
            dock.next()
            shown = time.perf_counter() - start
            wait(app, lambda n=name: n in ready, "the next image's embedding")
            timings[kind].append((shown, ready[name] - start))
    dock.close_series()
    viewer.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="moves measured of each kind, per model")
    parser.add_argument("--size", type=int, default=512, help="the images' side in pixels")
    parser.add_argument("--models", nargs="+", default=["tiny-cells", "vit-b"], help="tiny-cells and/or vit-b")
    results.add_option(parser, "series")
    args = parser.parse_args()
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        folder = root / "images"
        folder.mkdir()
        for index in range(2 * args.images + 2):
            image = synthetic_cells((args.size, args.size), seed=995_000 + index)[0]
            tifffile.imwrite(folder / f"image_{index:02d}.tif", image)
        for model in args.models:
            name = model
            if model == "vit-b":
                name = str(root / "vit-b")
                random_sam(sam_config(), seed=0).save_pretrained(name)
            timings = measure(name, folder, root / f"out-{model}", args.images)
            figures[model] = timings
            label = "tiny-cells" if model == "tiny-cells" else "SAM ViT-B architecture (1024 input)"
            for kind, values in timings.items():
                shown = statistics.median(v[0] for v in values)
                ready = statistics.median(v[1] for v in values)
                rows.append([label, "read and embedded ahead" if kind == "ahead" else "on demand",
                             results.seconds(shown), results.seconds(ready)])
                print(f"{label:40s} {kind:10s} shown {shown * 1000:8.1f} ms  ready {ready * 1000:8.1f} ms")
    table = results.table("Next to a ready image", ["model", "next image", "shown after", "ready for a click after"],
                          rows, notes=f"Median of {args.images} moves each, {args.size} x {args.size} uint16 "
                                      "images, CPU; 'ready' is when its embedding is there for the first click.")
    results.write(args.results, "series", "Moving on in an image series", [table], figures, packages=("napari",))


if __name__ == "__main__":
    main()
