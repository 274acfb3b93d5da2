"""The bundled tiny-cells model and the synthetic cells it was trained on: the end-to-end geometry guard.

A click inside a cell must give that cell, and a box around it must too, through ``Predictor`` only, on seeds
never used in training, for odd image sizes, several dtypes and contrast limits. A swapped axis, a wrong scale
or a wrong pad anywhere between the image and the masks makes these fail.
"""

import json

import numpy as np
import pytest
import torch

from napari_sam import Predictor
from napari_sam.core.model import BUNDLED_DIR, resolve_checkpoint
from napari_sam.core.objects import mask_iou
from napari_sam.demo import CELL_RADIUS, synthetic_cells

HELD_OUT_SEEDS = range(500_000, 500_008)  # training draws seeds from its own generator; these are fixed
FOLDER = BUNDLED_DIR / "tiny-cells"


def median_ious(tiny_cells_whole, shape=(256, 256), dtype=np.uint16, limits=None, seeds=HELD_OUT_SEEDS):
    """(median click IoU, median box IoU) over the cells of held-out images.

    The scene scales with the image: cell radii grow with its longest side, so that an image of another size
    looks like a rescaled 256-pixel one and its cells keep their size in the model's 256-pixel frame.
    """
    rng = np.random.default_rng(1)
    clicks, boxes = [], []
    zoom = max(shape) / 256
    for seed in seeds:
        image, labels = synthetic_cells(shape, seed=seed, dtype=dtype, n_cells=round(20 * np.prod(shape) / (
            256 * 256 * zoom**2)), radius_range=(CELL_RADIUS[0] * zoom, CELL_RADIUS[1] * zoom))
        contrast = None if limits is None else tuple(np.percentile(image, limits))
        tiny_cells_whole.set_image(image, contrast_limits=contrast)
        for cell in range(1, int(labels.max()) + 1):
            target = labels == cell
            rows, cols = np.nonzero(target)
            if len(rows) < 30:  # cut by the image border
                continue
            pick = rng.integers(len(rows))
            click = tiny_cells_whole.predict(points=[[rows[pick], cols[pick]]])
            clicks.append(mask_iou(click.full_masks(click.best_masks())[0], target))
            box = tiny_cells_whole.predict(boxes=[[rows.min(), cols.min(), rows.max(), cols.max()]])
            boxes.append(mask_iou(box.full_masks(box.best_masks())[0], target))
    assert len(clicks) >= 30
    return float(np.median(clicks)), float(np.median(boxes))


def test_bundled_model_is_small_safe_and_found_by_name():
    assert resolve_checkpoint("tiny-cells") == str(FOLDER)
    files = {path.name for path in FOLDER.iterdir()}
    assert "model.safetensors" in files and not {"pytorch_model.bin", "model.bin"} & files
    assert sum(path.stat().st_size for path in FOLDER.iterdir()) <= 10 * 2**20
    parameters = json.loads((FOLDER / "training.json").read_text())["parameters"]
    assert 1_000_000 <= parameters <= 5_000_000
    card = " ".join((FOLDER / "README.md").read_text().split())
    assert "synthetic" in card and "not a replacement for real SAM weights" in card


def test_clicks_and_boxes_find_the_cell(tiny_cells_whole):
    click, box = median_ious(tiny_cells_whole)
    assert click >= 0.85, click
    assert box >= 0.90, box


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "dtype", "limits"),
    [
        ((203, 517), np.uint16, None),
        ((517, 203), np.uint16, None),
        ((203, 517), np.uint8, None),
        ((300, 257), np.float32, None),
        ((256, 256), np.uint16, (1, 99.9)),
        ((203, 517), np.float32, (5, 99)),
    ],
    ids=["203x517-uint16", "517x203-uint16", "203x517-uint8", "300x257-float", "limits-uint16", "limits-float"],
)
def test_geometry_holds_for_sizes_dtypes_and_contrast(tiny_cells_whole, shape, dtype, limits):
    click, box = median_ious(tiny_cells_whole, shape=shape, dtype=dtype, limits=limits, seeds=HELD_OUT_SEEDS[:5])
    assert click >= 0.85, click
    assert box >= 0.90, box


def test_synthetic_cells_are_reproducible_and_labelled():
    image, labels = synthetic_cells((120, 160), seed=3)
    again, _ = synthetic_cells((120, 160), seed=3)
    other, _ = synthetic_cells((120, 160), seed=4)
    assert image.dtype == np.uint16 and labels.dtype == np.uint16 and image.shape == labels.shape == (120, 160)
    assert np.array_equal(image, again) and not np.array_equal(image, other)
    assert image.max() > 255  # real 16-bit values
    ids = np.unique(labels)[1:]
    assert len(ids) >= 3 and ids.tolist() == list(range(1, len(ids) + 1))
    inside = image[labels > 0].astype(float).mean()
    assert inside > 1.5 * image[labels == 0].astype(float).mean()


def test_some_cells_touch():
    _, labels = synthetic_cells((256, 256), seed=0)
    right = (labels[:, :-1] > 0) & (labels[:, 1:] > 0) & (labels[:, :-1] != labels[:, 1:])
    down = (labels[:-1] > 0) & (labels[1:] > 0) & (labels[:-1] != labels[1:])
    assert right.any() or down.any()


def test_stack_cross_sections_change_with_z():
    image, labels = synthetic_cells((20, 128, 128), seed=5, ndim=3)
    assert image.shape == labels.shape == (20, 128, 128)
    areas = [(labels[z] > 0).sum() for z in range(20)]
    assert areas[0] < max(areas) and len(set(areas)) > 5
    cell = int(np.bincount(labels.ravel())[1:].argmax()) + 1
    sections = [(labels[z] == cell).sum() for z in range(20)]
    assert 0 in sections and max(sections) > 0  # each cell ends within the stack


@pytest.mark.parametrize(("kwargs", "message"), [({"ndim": 4}, "ndim"), ({"shape": (3, 4, 5)}, "shape")])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_cells(**kwargs)


def test_bfloat16_gives_the_same_masks(tiny_cells_whole):
    """bf16 weights (what precision "auto" picks on CPUs with AMX or AVX-512 BF16) keep the masks: clicks on
    every cell give masks that overlap the float32 ones almost exactly."""
    from napari_sam.core.model import fast_bfloat16, resolve_dtype

    half = Predictor.from_pretrained("tiny-cells", device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    expected = torch.bfloat16 if fast_bfloat16(torch.device("cpu")) else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    agreement = []
    for seed in HELD_OUT_SEEDS[:3]:
        image, labels = synthetic_cells((256, 256), seed=seed)
        tiny_cells_whole.set_image(image)
        half.set_image(image)
        for cell in range(1, int(labels.max()) + 1):
            rows, cols = np.nonzero(labels == cell)
            if len(rows) < 30:
                continue
            centre = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
            click = [[rows[centre], cols[centre]]]
            agreement.append(mask_iou(tiny_cells_whole.predict(points=click).best_masks()[0],
                                 half.predict(points=click).best_masks()[0]))
    assert np.median(agreement) >= 0.97 and np.percentile(agreement, 10) >= 0.9, agreement
