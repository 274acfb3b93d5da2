"""Helpers shared by the tests: overlap, picking cells of synthetic images, waiting for a dock."""

import threading

import numpy as np


def iou(a, b) -> float:
    """Intersection over union of two boolean arrays (0 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    return float((a & b).sum() / max(1, (a | b).sum()))


def largest_cells(labels, count):
    """The ids of the ``count`` largest objects of a labels array, largest first."""
    sizes = np.bincount(np.asarray(labels).ravel())
    sizes[0] = 0
    return [int(i) for i in np.argsort(-sizes)[:count]]


def cell_point(labels, cell):
    """(row, col) of the cell's pixel nearest to its centroid (inside the cell)."""
    rows, cols = np.nonzero(labels == cell)
    nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
    return np.array([rows[nearest], cols[nearest]], dtype=float)


def cell_box(labels, cell):
    """[[row_min, col_min], [row_max, col_max]] of the cell."""
    rows, cols = np.nonzero(labels == cell)
    return np.array([[rows.min(), cols.min()], [rows.max(), cols.max()]], dtype=float)


def settle(qtbot, widget, timeout=60_000):
    """Wait until the dock's work has finished and the newest prompts' result is shown."""
    qtbot.waitUntil(lambda: not widget.busy and widget.shown_request == widget.predict_request, timeout=timeout)


def click_largest_cell(qtbot, viewer, widget, truth, z_scale=1.0):
    """Show the plane where the largest cell of a stack is widest and click its centre; (cell, plane)."""
    cell = largest_cells(truth, 1)[0]
    middle = int(np.argmax((truth == cell).sum(axis=(1, 2))))
    viewer.dims.set_point(0, middle * z_scale)
    settle(qtbot, widget)
    widget.points_picker.value.add(np.r_[middle, cell_point(truth[middle], cell)])
    settle(qtbot, widget)
    return cell, middle


def processor_inputs(processor, image, points=None, labels=None, boxes=None):
    """transformers' ``SamProcessor`` inputs for (row, col) points and (row_min, col_min, row_max, col_max) boxes
    (swapped to SAM's (x, y) here, independently of napari_sam); input points as float32."""
    kwargs = {}
    if points is not None:
        kwargs["input_points"] = [[[[c, r] for r, c in points]]]
        kwargs["input_labels"] = [[labels]]
    if boxes is not None:
        kwargs["input_boxes"] = [[[c0, r0, c1, r1] for r0, c0, r1, c1 in boxes]]
    inputs = processor(images=image, return_tensors="pt", **kwargs)
    if "input_points" in inputs:
        inputs["input_points"] = inputs["input_points"].float()
    return inputs


class OnePlaneVolume:
    """A volume that hands out at most one plane per read along ``axis`` and records the plane indices read; taking
    it whole (``np.asarray``) fails."""

    def __init__(self, data, axis):
        self.data, self.axis, self.reads = data, axis % data.ndim, []
        self.shape, self.ndim, self.dtype = data.shape, data.ndim, data.dtype

    def __getitem__(self, key):
        part = self.data[key]
        assert part.size <= self.data.size // self.shape[self.axis], f"{part.shape} read at {key}"
        self.reads.append(key[self.axis] if isinstance(key, tuple) else key)
        return part

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole volume was read")


def blob_image(shape, seed: int = 0, n_blobs: int = 12) -> np.ndarray:
    """Smooth float image in [0, 1] of ``shape`` (H, W): Gaussian blobs of varied size over a gradient."""
    rng = np.random.default_rng(seed)
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    image = 0.2 * rows / height + 0.1 * cols / width
    for _ in range(n_blobs):
        r, c = rng.uniform(0, height), rng.uniform(0, width)
        sigma = rng.uniform(0.04, 0.15) * min(height, width)
        image += rng.uniform(0.3, 1.0) * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2))
    image += rng.normal(0, 0.01, shape)
    image -= image.min()
    return (image / image.max()).astype(np.float32)


class Recorded:
    """An array-like over ``data`` that records, for every read, the calling thread and the planes and pixel
    region asked for (as napari and the dock index it)."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim, self.reads = data, data.shape, data.dtype, data.ndim, []

    def __getitem__(self, key):
        part = self.data[key]
        key = key if isinstance(key, tuple) else (key,)
        plane = key[0] if isinstance(key[0], (int, np.integer)) else key[0].start
        self.reads.append((threading.current_thread().name, plane, part.shape[-2:]))
        return part

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole stack was read")


def tiny_cells_input_size() -> int:
    """The bundled tiny-cells model's input size in pixels (its native tile)."""
    import json

    from napari_sam.core.model_loading import BUNDLED_DIR

    return json.loads((BUNDLED_DIR / "tiny-cells" / "config.json").read_text())["vision_config"]["image_size"]


def tiny_cells_tile() -> int:
    """Side of the bundled tiny-cells model's own tile in image pixels: its input size, divided by the tile scale
    it recommends (it sees images magnified)."""
    from napari_sam.core.model_loading import BUNDLED_DIR
    from napari_sam.core.settings import read_recommendations

    scale = read_recommendations(BUNDLED_DIR / "tiny-cells").image.tile_scale
    return round(tiny_cells_input_size() / scale) if scale > 1 else tiny_cells_input_size()
