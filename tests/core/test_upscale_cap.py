"""How a checkpoint's ``napari_sam.json`` ``"image"`` section frames images.

- ``max_upscale``: a checkpoint trained at its images' own pixel scale can cap how much a small image is enlarged:
  the image then fills only part of the model's input, the rest padded, and every path (clicks, boxes, mask
  inputs, segment everything and its crops) maps through that frame.
- ``tile_scale``: a checkpoint trained on objects larger than its users' sees images magnified, in tiles of
  ``input / tile_scale`` pixels; an object too large for them is decoded again at native resolution.
"""


import numpy as np
import pytest
import torch

from napari_sam import Predictor, segment_everything
from napari_sam.core.decoding import upscale_logits
from napari_sam.core.errors import ModelLoadError
from napari_sam.core.image import fitted_scale, whole_frame
from napari_sam.core.model import read_recommendations
from napari_sam.core.objects import mask_iou
from napari_sam.core.settings import EverythingSettings, TilingSettings
from napari_sam.testing.held_out import HELD_OUT, best_mask, matched
from napari_sam.testing.synthetic_microscopy import synthetic_scene

from helpers import tiny_cells_with


def test_the_scale_is_capped_only_where_asked():
    assert fitted_scale((120, 150), 256) == 256 / 150
    assert fitted_scale((120, 150), 256, 1.5) == 1.5 and fitted_scale((600, 400), 256, 1.5) == 256 / 600
    frame = whole_frame((120, 150), 256, 1.0)
    assert (frame.row1, frame.col1, frame.scale, frame.resized_size) == (120, 150, 1.0, (120, 150))


def test_a_small_image_is_embedded_at_its_own_scale_and_its_cells_found(tiny_cells_capped, small_cells,
                                                                        tmp_path_factory):
    image, labels = small_cells
    assert tiny_cells_capped.geometry.max_upscale == 1.0
    tiny_cells_capped.set_image(image)
    frame = tiny_cells_capped.frames()[0]
    assert (frame.scale, frame.resized_size) == (1.0, (120, 150))
    assert tiny_cells_capped.frame_embedding(frame)[0].resized_size == (120, 150)
    plain = Predictor.from_pretrained(tiny_cells_with(tmp_path_factory.mktemp("plain"), {}),
                                      device="cpu")  # SAM's rule: the longest side fills the input
    plain.set_image(image)
    assert plain.geometry.max_upscale == 0 and plain.frames()[0].scale == plain.geometry.longest_edge / 150
    clicks, boxes, refined = [], [], []
    rng = np.random.default_rng(0)
    cells = [cell for cell in range(1, labels.max() + 1) if (labels == cell).sum() >= 100]
    assert len(cells) >= 5
    for cell in cells:
        target = labels == cell
        rows, cols = np.nonzero(target)
        pick = rng.integers(len(rows))
        click = tiny_cells_capped.predict(points=[[rows[pick], cols[pick]]])
        assert click.frame == frame and click.full_masks(click.best_masks()).shape[-2:] == (120, 150)
        clicks.append(mask_iou(best_mask(click), target))
        box = [[rows.min(), cols.min(), rows.max(), cols.max()]]
        boxes.append(mask_iou(best_mask(tiny_cells_capped.predict(boxes=box)), target))
        logits = torch.from_numpy(tiny_cells_capped.mask_logits(target))  # the mask as a prompt, in the capped frame
        redrawn = upscale_logits(logits, tiny_cells_capped.geometry, frame.resized_size, frame.size)[0].numpy() > 0
        refined.append(mask_iou(redrawn, target))
    assert np.median(clicks) >= 0.75 and np.median(boxes) >= 0.8, (clicks, boxes)
    assert min(refined) >= 0.8, refined  # a mask input lands where its mask is


def test_segment_everything_and_its_crops_use_the_capped_frames(tiny_cells_capped, small_cells):
    image, labels = small_cells
    settings = EverythingSettings(points_per_side=16, pred_iou_thresh=0.7, stability_score_thresh=0.8)
    result = segment_everything(tiny_cells_capped, image, settings)
    objects, found, segments, matching = matched(labels, np.asarray(result.labels))
    assert found >= 0.6 * objects and matching >= 0.6 * segments, (objects, found, segments, matching)
    cropped = segment_everything(tiny_cells_capped, image, settings.replace(crop_n_layers=1))
    assert cropped.labels.shape == (120, 150)
    assert matched(labels, np.asarray(cropped.labels))[1] >= found - 1


@pytest.mark.parametrize("section", [{"max_upscale": 0.5}, {"max_upscale": "1"}, {"max_upscale": True},
                                     {"upscale": 2}, [1.5], {"tile_scale": 0.5}, {"tile_scale": 17}])
def test_a_bad_image_section_is_refused_naming_it(tmp_path, section):
    folder = tiny_cells_with(tmp_path, section)
    with pytest.raises(ModelLoadError, match='"image" section'):
        read_recommendations(str(folder))
    with pytest.raises(ModelLoadError, match='"image" section'):
        Predictor.from_pretrained(str(folder), device="cpu")


def test_the_tiling_rule_follows_the_tile_scale():
    plain = TilingSettings()
    assert not plain.tiles((1024, 1024), 512) and plain.tiles((1025, 300), 512)  # SAM's rule: over two tiles
    assert not plain.tiles((256, 200), 256, whole_limit=1.0) and plain.tiles((257, 200), 256, whole_limit=1.0)
    assert plain.resolved(256) == (256, 32)
    assert TilingSettings(tile_size=384).resolved(256) == (384, 48)  # an explicit tile wins


def test_a_magnifying_checkpoint_sees_small_nuclei_in_magnified_tiles(tmp_path_factory):
    """The same weights with ``tile_scale`` 2 and without: a 512² field of 10-30 px nuclei is seen in 256-px tiles
    at twice its size, and clicks on the nuclei give better masks there; an object covering more than a quarter of
    the input in such a tile is decoded again at native resolution."""
    magnified = Predictor.from_pretrained(tiny_cells_with(tmp_path_factory.mktemp("magnified"), {"tile_scale": 2.0}),
                                          device="cpu")
    native = Predictor.from_pretrained(tiny_cells_with(tmp_path_factory.mktemp("native"), {}), device="cpu")
    geometry = magnified.geometry
    assert geometry.default_tile == geometry.image_size // 2 and geometry.whole_limit == 1.0
    assert native.geometry.default_tile == geometry.image_size and native.geometry.whole_limit == 2.0
    image, labels, _ = synthetic_scene((512, 512), "nuclei", seed=HELD_OUT + 77)
    magnified.set_image(image)
    native.set_image(image)
    tiles = magnified.tile_grid
    assert magnified.tiled and tiles.tile == geometry.image_size // 2 and tiles.scale == 2.0
    assert not native.tiled and native.frames()[0].scale == 1.0
    rng = np.random.default_rng(1)
    ious = {"magnified": [], "native": []}
    for cell in range(1, int(labels.max()) + 1):
        rows, cols = np.nonzero(labels == cell)
        if len(rows) < 12:
            continue
        pick = rng.integers(len(rows))
        for name, predictor in (("magnified", magnified), ("native", native)):
            prediction = predictor.predict(points=[[rows[pick], cols[pick]]])
            ious[name].append(mask_iou(best_mask(prediction), labels == cell))
    assert len(ious["native"]) >= 40
    assert np.median(ious["magnified"]) >= np.median(ious["native"]) + 0.05, {k: np.median(v) for k, v in ious.items()}
    assert tiles.too_large((200, 299), (150, 249)) and not tiles.too_large((200, 260), (150, 210))
    window = tiles.window_around((200, 299), (150, 249))
    assert window.scale == 1.0 and window.holds((200, 299), (150, 249))
    # the largest cell of a "large" scene, 65 px across: 130 px in a magnified tile, so its box is decoded again at
    # native resolution
    image, labels, _ = synthetic_scene((512, 512), "large", seed=HELD_OUT + 78)
    magnified.set_image(image)
    sizes = np.bincount(labels.ravel())
    cell = int(np.argmax(sizes[1:])) + 1
    rows, cols = np.nonzero(labels == cell)
    assert magnified.tile_grid.too_large((rows.min(), rows.max()), (cols.min(), cols.max()))
    prediction = magnified.predict(boxes=[[rows.min(), cols.min(), rows.max(), cols.max()]])
    assert prediction.frame.scale == 1.0 and mask_iou(best_mask(prediction), labels == cell) >= 0.85
