"""Helpers shared by the tests: overlap, picking cells of synthetic images, waiting for a dock, and transformers'
documented SAM path to compare with."""

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import torch
from transformers import SamModel, SamProcessor
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil


def count_encoder_runs(predictor) -> list:
    """A list that gets an item each time the predictor's image encoder runs."""
    calls: list = []
    predictor.model.vision_encoder.register_forward_hook(lambda *args: calls.append(1))
    return calls


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

    from napari_sam.core.model import BUNDLED_DIR

    return json.loads((BUNDLED_DIR / "tiny-cells" / "config.json").read_text())["vision_config"]["image_size"]


def tiny_cells_tile() -> int:
    """Side of the bundled tiny-cells model's own tile in image pixels: its input size, divided by the tile scale
    it recommends (it sees images magnified)."""
    from napari_sam.core.model import BUNDLED_DIR, read_recommendations

    scale = read_recommendations(BUNDLED_DIR / "tiny-cells").image.tile_scale
    return round(tiny_cells_input_size() / scale) if scale > 1 else tiny_cells_input_size()


# --- transformers' documented SAM path, the reference of the equivalence tests ---------------------------------

MAX_DISAGREEMENT = 0.005
SCORE_TOLERANCE = 1e-3


def make_image(kind: str, shape, seed: int = 0):
    """(image as napari holds it, contrast limits to pass, uint8 RGB(A) the reference gets)."""
    base = blob_image(shape, seed)
    rng = np.random.default_rng(seed + 100)
    if kind == "rgb_uint8":
        rgb = np.stack([base, blob_image(shape, seed + 1), blob_image(shape, seed + 2)], axis=-1)
        image = (rgb * 255).round().astype(np.uint8)
        return image, None, image
    if kind == "gray_uint8":
        image = (base * 255).round().astype(np.uint8)
        return image, None, np.stack([image] * 3, axis=-1)
    if kind == "rgba_uint8":
        rgb = np.stack([base, blob_image(shape, seed + 1), base[::-1]], axis=-1)
        alpha = np.clip(0.6 + 0.4 * blob_image(shape, seed + 3), 0, 1)[..., None]
        image = (np.concatenate([rgb, alpha], axis=-1) * 255).round().astype(np.uint8)
        return image, None, image  # transformers composites RGBA onto white
    if kind == "gray_uint16":
        image = (base * 30000 + 1000 + rng.normal(0, 50, shape)).clip(0, 65535).astype(np.uint16)
        low, high = 3000.0, 25000.0
        display = np.clip((image.astype(np.float64) - low) / (high - low), 0, 1)
        return image, (low, high), np.stack([(display * 255).round().astype(np.uint8)] * 3, axis=-1)
    if kind == "float_nan":
        image = (base * 7.5 - 2.0).astype(np.float32)
        image[rng.random(shape) < 0.01] = np.nan
        low, high = np.nanpercentile(image, [0.5, 99.5])
        display = np.nan_to_num(np.clip((image - low) / (high - low), 0, 1), nan=0.0)
        return image, None, np.stack([(display * 255).round().astype(np.uint8)] * 3, axis=-1)
    raise AssertionError(kind)


def prompt_cases(shape):
    """name -> (points (row, col), labels, boxes (row_min, col_min, row_max, col_max))."""
    h, w = shape
    box = [0.2 * h, 0.25 * w, 0.7 * h, 0.8 * w]
    three = [box, [0.05 * h, 0.05 * w, 0.45 * h, 0.4 * w], [0.5 * h, 0.55 * w, 0.95 * h, 0.97 * w]]
    return {
        "one_point": ([[0.4 * h, 0.6 * w]], [1], None),
        "pos_neg_points": ([[0.4 * h, 0.6 * w], [0.7 * h, 0.2 * w], [0.15 * h, 0.85 * w]], [1, 0, 1], None),
        "one_box": (None, None, [box]),
        "three_boxes": (None, None, three),
        "box_and_points": ([[0.45 * h, 0.5 * w], [0.3 * h, 0.3 * w]], [1, 0], [box]),
    }


class Reference:
    """transformers' documented SAM path, one call per prompt (``model_class``: SamModel, or SamHQModel)."""

    def __init__(self, folder, image_size, model_class=SamModel):
        self.model = model_class.from_pretrained(folder).eval()
        self.processor = SamProcessor(image_processor=SamImageProcessorPil(
            size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size}))

    @torch.no_grad()
    def __call__(self, image, points=None, labels=None, boxes=None, mask_input=None):
        inputs = processor_inputs(self.processor, image, points, labels, boxes)
        pixels = inputs["pixel_values"].float()  # uint8 when the processor neither rescales nor normalises
        out = self.model(pixel_values=pixels, input_points=inputs.get("input_points"),
                         input_labels=inputs.get("input_labels"), input_boxes=inputs.get("input_boxes"),
                         input_masks=mask_input, multimask_output=True)
        masks = self.processor.post_process_masks(out.pred_masks, inputs["original_sizes"],
                                                  inputs["reshaped_input_sizes"])[0]
        return masks.numpy(), out.iou_scores[0].numpy(), out.pred_masks[0]


def assert_equivalent(ours, ref_masks, ref_scores):
    assert ours.masks.shape == ref_masks.shape
    assert ours.masks.dtype == bool
    disagreement = (ours.masks != ref_masks).mean()
    assert disagreement <= MAX_DISAGREEMENT, f"{disagreement:.4%} of mask pixels disagree"
    np.testing.assert_allclose(ours.scores, ref_scores, atol=SCORE_TOLERANCE)


def assert_cases_equivalent(predictor, reference, reference_image, shape):
    """Every prompt case on the predictor's current image, then a mask input from a previous call (the best
    candidate's low-res logits feed the next prediction), against ``reference(image, points, labels, boxes,
    mask_input=)``."""
    for name, (points, labels, boxes) in prompt_cases(shape).items():
        ours = predictor.predict(points=points, point_labels=labels, boxes=boxes)
        ref_masks, ref_scores, _ = reference(reference_image, points, labels, boxes)
        assert ours.masks.shape[:2] == (1 if boxes is None else len(boxes), 3), name
        assert_equivalent(ours, ref_masks, ref_scores)
    points, labels, _ = prompt_cases(shape)["one_point"]
    first = predictor.predict(points=points, point_labels=labels)
    _, ref_first_scores, ref_low_res = reference(reference_image, points, labels)
    best = int(ref_first_scores[0].argmax())
    assert int(first.best()[0]) == best
    refined_points = points + [[0.6 * shape[0], 0.3 * shape[1]]]
    ours = predictor.predict(points=refined_points, point_labels=[1, 0], mask_input=first.best_logits())
    ref_masks, ref_scores, _ = reference(reference_image, refined_points, [1, 0],
                                         mask_input=ref_low_res[:, best][None])
    assert_equivalent(ours, ref_masks, ref_scores)


# --- checkpoints and runs made for tests ---------------------------------------------------------------------------

def tiny_cells_with(folder, section) -> str:
    """A copy of the bundled tiny-cells in ``folder`` whose ``napari_sam.json`` has the ``"image"`` section
    ``section``; returns the copy's path."""
    from napari_sam.core.model import BUNDLED_DIR

    target = Path(folder) / "tiny-cells"
    shutil.copytree(BUNDLED_DIR / "tiny-cells", target)
    values = json.loads((target / "napari_sam.json").read_text())
    (target / "napari_sam.json").write_text(json.dumps({**values, "image": section}))
    return str(target)


#: Fast segment-everything settings for batch runs: a coarse grid (the tests compare paths, not quality; 10 x 10
#: finds every cell of the batch dataset).
FAST_EVERYTHING = {"points_per_side": 10, "pred_iou_thresh": 0.7, "stability_score_thresh": 0.8}


def batch_config(**batch):
    """A batch run of tiny-cells in float32 with :data:`FAST_EVERYTHING`; ``batch`` sets the run's own settings."""
    from napari_sam.batch import BatchSettings, RunConfig
    from napari_sam.core.settings import EverythingSettings

    return RunConfig(batch=BatchSettings(model="tiny-cells", precision="float32", **batch),
                     everything=EverythingSettings(**FAST_EVERYTHING))


#: Input sizes of the tiny checkpoints of the other families (SAM3's tracker takes multiples of 14).
FAMILY_SIZES = {"sam_hq": 64, "sam2": 64, "sam3_tracker": 56}
#: Input size of the tiny SAM3 concept checkpoint.
SAM3_SIZE = 56


def in_threads(work, count: int = 4) -> list:
    """Run ``work()`` in ``count`` threads at once; returns their results, or raises the first error one raised."""
    results, errors = [], []

    def run() -> None:
        try:
            results.append(work())
        except Exception as error:  # noqa: BLE001 - raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
