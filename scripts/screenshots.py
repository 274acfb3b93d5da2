"""The screenshots of the README and the docs, made by driving the real napari GUI as a person does: real mouse
clicks and key presses (xdotool) in a shown viewer on an X display, with the bundled tiny-cells model.

    .venv/bin/python scripts/screenshots.py            # writes docs/images/*.png
    .venv/bin/python scripts/screenshots.py --out DIR

Needs xdotool and an X display; without ``DISPLAY`` it starts its own Xvfb (``apt-get install xvfb xdotool``).
Each picture is checked before it is written (a mask is previewed, objects are found, an object runs through the
stack), so a broken workflow fails here instead of giving a stale or empty picture.

- ``demo.png``: the demo sample with two objects committed and a third click's mask previewed;
- ``segment-everything.png``: the Segment everything dock's result on the demo sample;
- ``stacks.png``: one click on a cell of the 3D sample, propagated through the stack (Propagate, P), shown in 3D;
- ``scribbles.png``: brush scribbles on a plane of the 3D sample, one over a cell (label 1) and one over its
  neighbour (label 2, the background), and the cell's mask previewed;
- ``all-objects.png``: every cell segmented on the middle plane of the 3D sample (Segment everything), then carried
  through the stack at once (All objects), shown in 3D;
- ``series.png``: the Image series dock on four images: the first annotated with a click and ``C``, then ``PageDown``
  and a click on the second, its mask previewed.
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np

from napari_sam.batch.files import write_atomically
from napari_sam.testing.x_input import XInput, start_display

ROOT = Path(__file__).resolve().parent.parent
#: The window's size on the screen, and the width of the pictures written (scaled down, for the docs).
WINDOW, WIDTH = (1500, 900), 1200


def shot(person: XInput, path: Path) -> None:
    """The whole window (canvas and docks), scaled to :data:`WIDTH`, written as a PNG."""
    from PIL import Image

    person.wait(0.5)
    pixels = person.viewer.screenshot(canvas_only=False, flash=False)
    picture = Image.fromarray(np.asarray(pixels)).convert("RGB")
    picture = picture.resize((WIDTH, round(picture.height * WIDTH / picture.width)), Image.LANCZOS)
    encoded = io.BytesIO()
    picture.save(encoded, format="PNG", optimize=True)
    write_atomically(path, encoded.getvalue())
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def cell_centres(labels: np.ndarray, count: int) -> list[tuple[int, int]]:
    """The centre pixels of ``count`` well-separated cells of a (H, W) label image (inside each cell)."""
    from scipy import ndimage

    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    chosen = []
    for cell in ids[np.argsort(-areas)]:
        inside = ndimage.distance_transform_edt(labels == cell)
        row, col = np.unravel_index(np.argmax(inside), inside.shape)
        if all(abs(row - r) + abs(col - c) > 120 for r, c in chosen):
            chosen.append((int(row), int(col)))
        if len(chosen) == count:
            break
    return chosen


def demo_and_everything(out: Path) -> None:
    import napari

    from napari_sam.demo import open_demo, synthetic_cells

    viewer = napari.Viewer(title="napari-sam", show=True)
    person = XInput(viewer, WINDOW)
    widget = open_demo(viewer)
    image = viewer.layers["synthetic cells"]
    person.wait_until(lambda: widget.predictor is not None and not widget.busy, "the model and the embedding")
    person.fit()
    _, truth = synthetic_cells((384, 512), seed=2024)  # the sample's cells, to click inside them
    *committed, shown = cell_centres(truth, 3)

    def highest_label() -> int:
        labels = widget.labels_picker.value
        return 0 if labels is None else int(np.asarray(labels.data).max())

    for number, point in enumerate(committed, start=1):
        person.click(image, point)
        person.wait_until(lambda: widget.shown_masks().any() and not widget.busy, f"the preview of click {number}")
        person.key("c")  # commit: the labels layer gets the object, and the prompts are cleared
        person.wait_until(lambda n=number: highest_label() == n, f"commit {number}")
    labels = widget.labels_picker.value
    person.click(image, shown)
    person.wait_until(lambda: widget.shown_masks().any() and not widget.busy, "the preview of the last click")
    shot(person, out / "demo.png")

    person.key("shift+c")  # clear the prompts
    _, everything = viewer.window.add_plugin_dock_widget("napari-sam", "Segment everything")
    person.wait_until(lambda: everything.predictor is not None and not everything.busy, "the second dock")
    everything.image_picker.value = image
    person.press(everything.run_button)
    person.wait_until(lambda: everything.result_layer is not None and not everything.busy, "segment everything",
                      seconds=300)
    found = int(everything.result_layer.data.max())
    if found < 0.8 * len(np.unique(truth[truth > 0])):
        raise RuntimeError(f"segment everything found {found} objects of the sample's {truth.max()} cells")
    labels.visible = False
    shot(person, out / "segment-everything.png")
    viewer.close()


def stacks(out: Path) -> None:
    import napari

    from napari_sam.demo import synthetic_cells
    from napari_sam.widgets.segment_widget import SegmentWidget

    viewer = napari.Viewer(title="napari-sam", show=True)
    person = XInput(viewer, WINDOW)
    viewer.open_sample("napari-sam", "synthetic-cells-3d")
    image = viewer.layers[0]
    _, truth = synthetic_cells((32, 256, 256), seed=2025, ndim=3)  # the 3D sample's cells
    ids, areas = np.unique(truth[16][truth[16] > 0], return_counts=True)
    cell = int(ids[np.argmax(areas)])  # the largest cell of the middle slice
    viewer.dims.set_current_step(0, 16)
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    assert isinstance(widget, SegmentWidget)
    widget.model_picker.native.setCurrentText("tiny-cells")
    widget.load_model()
    person.wait_until(lambda: widget.predictor is not None and not widget.busy, "the model and the embedding")
    person.fit()
    (row, col), = cell_centres(np.where(truth[16] == cell, cell, 0), 1)
    person.click(image, (16, row, col))
    person.wait_until(lambda: widget.preview_layer is not None and widget.shown_masks().any() and not widget.busy,
                      "the preview")
    person.key("p")  # propagate through the stack: the object is written into the labels, slice by slice

    def slices_with_the_object() -> int:
        labels = widget.labels_picker.value
        return 0 if labels is None else int((np.asarray(labels.data).reshape(len(labels.data), -1) > 0).any(1).sum())

    person.wait_until(lambda: slices_with_the_object() > 3 and not widget.busy, "the propagation", seconds=300)
    labels, slices = widget.labels_picker.value, slices_with_the_object()
    depth = int((truth.reshape(len(truth), -1) == cell).any(1).sum())
    if abs(slices - depth) > 3:
        raise RuntimeError(f"the object runs through {slices} slices; the cell is {depth} deep")
    viewer.dims.ndisplay = 3
    image.opacity, image.gamma, labels.opacity = 0.6, 0.7, 1.0
    person.fit()
    viewer.scene.camera.angles = (30, -40, 60)  # tilted: the stack's depth shows
    shot(person, out / "stacks.png")
    viewer.close()


def open_3d_sample(person: XInput, viewer, plane: int):
    """The 3D sample on ``plane`` with the prompt dock and tiny-cells loaded: (image layer, dock, the sample's true
    labels)."""
    from napari_sam.demo import synthetic_cells
    from napari_sam.widgets.segment_widget import SegmentWidget

    viewer.open_sample("napari-sam", "synthetic-cells-3d")
    _, truth = synthetic_cells((32, 256, 256), seed=2025, ndim=3)  # the 3D sample's cells
    viewer.dims.set_current_step(0, plane)
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    assert isinstance(widget, SegmentWidget)
    widget.model_picker.native.setCurrentText("tiny-cells")
    widget.load_model()
    person.wait_until(lambda: widget.predictor is not None and not widget.busy, "the model and the embedding")
    person.fit()
    return viewer.layers[0], widget, truth


def scribbles(out: Path) -> None:
    import napari

    viewer = napari.Viewer(title="napari-sam", show=True)
    person = XInput(viewer, WINDOW)
    image, widget, truth = open_3d_sample(person, viewer, 12)
    ids, areas = np.unique(truth[12][truth[12] > 0], return_counts=True)
    cell, neighbour = (int(i) for i in ids[np.argsort(-areas)[:2]])
    person.press(widget.brush_button)  # the brush layer, in paint mode with label 1
    rows, cols = np.nonzero(truth[12] == cell)
    person.drag(image, [(12, r, c) for r, c in zip(np.linspace(rows.min() + 5, rows.max() - 5, 14),
                                                    np.linspace(cols.mean() - 4, cols.mean() + 4, 14))])
    person.wait_until(lambda: widget.shown_masks().any() and not widget.busy, "the brush stroke's preview")
    person.key("t")  # the background's label
    rows, cols = np.nonzero(truth[12] == neighbour)
    person.drag(image, [(12, r, cols.mean()) for r in np.linspace(rows.min() + 4, rows.max() - 4, 8)])
    person.wait(2)
    person.wait_until(lambda: not widget.busy, "the preview with both strokes")
    mask = widget.shown_masks()
    mask = mask if mask.ndim == 2 else mask.any(0)
    true = truth[12] == cell
    if (mask & true).sum() / (mask | true).sum() < 0.8 or (mask & (truth[12] == neighbour)).any():
        raise RuntimeError("the brush scribbles' preview misses the cell")
    shot(person, out / "scribbles.png")
    viewer.close()


def all_objects(out: Path) -> None:
    import napari

    viewer = napari.Viewer(title="napari-sam", show=True)
    person = XInput(viewer, WINDOW)
    image, widget, truth = open_3d_sample(person, viewer, 16)
    dock, everything = viewer.window.add_plugin_dock_widget("napari-sam", "Segment everything")
    dock.raise_()  # its tab in front of the prompt dock's
    person.wait(0.5)
    person.press(everything.run_button)
    person.wait_until(lambda: everything.result_layer is not None and not everything.busy, "segment everything")
    found = everything.result_layer
    widget.labels_picker.value = found
    dock.close()  # back to the prompt dock
    person.wait(0.5)
    person.press(widget.propagation.all_button)
    person.wait_until(lambda: not widget.busy and "Propagated" in widget.status.value, "all objects", seconds=600)
    depth = (np.asarray(found.data).reshape(len(found.data), -1) > 0).any(1).sum()
    if depth < 10:
        raise RuntimeError(f"the objects reach {depth} planes only")
    viewer.dims.ndisplay = 3
    image.opacity, image.gamma, found.opacity = 0.5, 0.7, 1.0
    person.fit()
    viewer.scene.camera.angles = (30, -40, 60)
    shot(person, out / "all-objects.png")
    viewer.close()


def series(out: Path) -> None:
    import tempfile

    import napari
    import tifffile

    from napari_sam.demo import synthetic_cells
    from napari_sam.widgets import open_series

    with tempfile.TemporaryDirectory() as temporary:
        here = Path.cwd()
        os.chdir(temporary)  # the dock shows the folders as a person names them, relative to where they work
        folder = Path("fields")
        folder.mkdir()
        truths = []
        for index in range(4):
            image, truth = synthetic_cells((256, 320), seed=996_000 + index, radius_range=(14.0, 20.0))
            tifffile.imwrite(folder / f"field_{index + 1:02d}.tif", image)
            truths.append(truth)
        viewer = napari.Viewer(title="napari-sam", show=True)
        person = XInput(viewer, WINDOW)
        dock = open_series(viewer, [str(folder)], "annotations", model="tiny-cells")
        for index in (0, 1):
            person.wait_until(lambda i=index: dock.current == i and dock.segment.predictor is not None
                              and not dock.segment.busy and dock.segment.points_picker.value is not None,
                              f"image {index + 1}")
            person.fit()
            (row, col), = cell_centres(truths[index], 1)
            person.click(dock.image_layer, (row, col))
            person.wait_until(lambda: dock.segment.shown_masks().any() and not dock.segment.busy, "the preview")
            if index == 0:
                person.key("c")
                person.wait_until(lambda: dock.series.images[0].objects, "the saved labels")
                person.key("Next")
        if not dock.series.images[0].corrected or dock.current != 1:
            raise RuntimeError("the series did not save the first image or move on")
        shot(person, out / "series.png")
        viewer.close()
        os.chdir(here)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="folder of the pictures")
    parser.add_argument("--only", choices=("demo", "stacks", "series"),
                        help="only the 2D pictures, the stack's or the image series'")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    server = start_display((WINDOW[0] + 100, WINDOW[1] + 100))
    try:
        if args.only in (None, "demo"):
            demo_and_everything(args.out)
        if args.only in (None, "stacks"):
            stacks(args.out)
            scribbles(args.out)
            all_objects(args.out)
        if args.only in (None, "series"):
            series(args.out)
    finally:
        if server is not None:
            server.terminate()


if __name__ == "__main__":
    main()
