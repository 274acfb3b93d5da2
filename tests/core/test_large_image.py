"""Large images: native-resolution tiles for prompts and segment everything, lazy reads, bounded memory.

A 4096² uint16 image of 20-30 px cells: resized whole into tiny-cells' input (512 pixels), a cell becomes 2-4
pixels and its mask is garbage; seen in native tiles it comes out as well as on a small image. Tile geometry is read
from the model (its input size is the tile), so these tests hold for any input size.
"""

import numpy as np
import pytest

from napari_sam import Predictor, segment_everything
from napari_sam.core.image import Tiling
from napari_sam.core.objects import mask_iou
from napari_sam.core.settings import TilingSettings
from napari_sam.demo import synthetic_cells


def full_best(prediction):
    return prediction.full_masks(prediction.best_masks())[0]


def sample_cells(labels, count, seed=0, min_pixels=150):
    rng = np.random.default_rng(seed)
    cells = [c for c in rng.permutation(np.arange(1, labels.max() + 1))[: 3 * count]
             if (labels == c).sum() >= min_pixels]
    return cells[:count]


def straddling_cells(labels, tiling: Tiling, count):
    """Cells that cross an inner border of the tile their centre's tile core belongs to (they lie in two tiles)."""
    borders = [set(np.r_[starts[1:], starts + tiling.tile][:-1].tolist()) for starts in tiling.starts]
    found = []
    for cell in range(1, labels.max() + 1):
        rows, cols = np.nonzero(labels == cell)
        if len(rows) < 150:
            continue
        if any(rows.min() < b <= rows.max() for b in borders[0]) or any(cols.min() < b <= cols.max()
                                                                         for b in borders[1]):
            found.append(cell)
        if len(found) == count:
            break
    return found


def quality(tiny_cells, labels, cells, seed=1):
    rng = np.random.default_rng(seed)
    clicks, boxes = [], []
    for cell in cells:
        target = labels == cell
        rows, cols = np.nonzero(target)
        pick = rng.integers(len(rows))
        clicks.append(mask_iou(full_best(tiny_cells.predict(points=[[rows[pick], cols[pick]]])), target))
        boxes.append(mask_iou(full_best(tiny_cells.predict(boxes=[[rows.min(), cols.min(), rows.max(), cols.max()]])),
                         target))
    return float(np.median(clicks)), float(np.median(boxes))


def cell_across_a_tile_border(tile: int):
    """(image, labels) of 3 x 3 tiles with one cell of radius ~40 centred 12 px left of the first inner tile border
    (column ``tile``), in the tile's middle rows."""
    image, labels = synthetic_cells((3 * tile, 3 * tile), seed=930_002, n_cells=1, radius_range=(38.0, 42.0))
    cell_rows, cell_cols = np.nonzero(labels == 1)
    shift = (int(1.48 * tile) - int(cell_rows.mean()), tile - 12 - int(cell_cols.mean()))
    return np.roll(image, shift, axis=(0, 1)), np.roll(labels, shift, axis=(0, 1))


def thin_halo(tiny_cells):
    """The same model with tiles that overlap by 32 px only, so that an 80 px cell across a border lies whole in
    neither tile."""
    return Predictor(tiny_cells.model, tiny_cells.geometry, "cpu", tiling=TilingSettings(mode="tiles", halo=16))


@pytest.mark.slow
def test_native_tiles_give_full_quality_masks_where_the_whole_image_cannot(large_cells, tiny_cells):
    image, labels = large_cells
    tiny_cells.set_image(image)
    assert tiny_cells.tiled and tiny_cells.image_size == (4096, 4096)
    cells = sample_cells(labels, 40)
    click, box = quality(tiny_cells, labels, cells)
    assert click >= 0.8 and box >= 0.85, (click, box)
    whole = Predictor(tiny_cells.model, tiny_cells.geometry, "cpu", tiling=TilingSettings(mode="whole"))
    whole.set_image(image)
    assert not whole.tiled
    click_whole, box_whole = quality(whole, labels, cells[:15])
    assert click_whole < 0.4 and box_whole < 0.4, (click_whole, box_whole)


@pytest.mark.slow
def test_cells_crossing_tile_borders_come_out_whole(large_cells, tiny_cells):
    image, labels = large_cells
    tiny_cells.set_image(image[:1536, :1536])
    cells = straddling_cells(labels[:1536, :1536], tiny_cells.tile_grid, 30)
    assert len(cells) == 30
    click, box = quality(tiny_cells, labels[:1536, :1536], cells)
    assert click >= 0.8 and box >= 0.85, (click, box)


def test_an_object_past_its_tiles_border_is_decoded_again_around_it(tiny_cells):
    """A click 15 px inside the cell's left edge is decoded in the first tile column (the one holding it); the cell
    crosses that tile's border, so the mask reaches it, and the prompt is decoded again in a tile-sized window
    centred on the cell, at native resolution (magnified tiles would show the 80 px cell too large)."""
    tile = tiny_cells.geometry.default_tile
    image, labels = cell_across_a_tile_border(tile)
    tiny_cells = thin_halo(tiny_cells)
    tiny_cells.set_image(image)
    rows, cols = np.nonzero(labels == 1)
    assert cols.min() < tile <= cols.max()
    row = int(1.48 * tile)
    click = [[row, cols.min() + 15]]
    first = tiny_cells.tile_grid.frame_holding((row, row), (click[0][1], click[0][1]))
    assert (first.col0, first.col1) == (0, tile)
    cut = tiny_cells.predict(points=click, frame=first, grow=False)
    prediction = tiny_cells.predict(points=click)
    assert prediction.frame.col1 > tile and prediction.frame.scale == 1.0
    whole, truncated = mask_iou(full_best(prediction), labels == 1), mask_iou(full_best(cut), labels == 1)
    assert whole >= 0.8 and whole > truncated + 0.1, (whole, truncated)


def test_a_mask_input_follows_its_prompts_out_of_its_frame(tiny_cells):
    """A mask input comes with the frame it belongs to (as the preview and propagation carry it). When the prompts
    no longer fit that frame (a box past its border, a new point far away), they are decoded in a frame that holds
    them, the mask input redrawn there: as if its mask had been given in that frame."""
    tile = tiny_cells.geometry.default_tile
    image, labels = cell_across_a_tile_border(tile)
    tiny_cells = thin_halo(tiny_cells)
    tiny_cells.set_image(image)
    rows, cols = np.nonzero(labels == 1)
    box = [[rows.min(), cols.min(), rows.max(), cols.max()]]
    row = int(1.48 * tile)
    first = tiny_cells.tile_grid.frame_holding((row, row), (cols.min() + 15, cols.min() + 15))
    assert (first.col0, first.col1) == (0, tile) and cols.max() >= tile
    inside = (labels == 1) & (np.arange(3 * tile) < tile - 6)[None, :]  # the part of the cell in the first tile
    carried = tiny_cells.predict(boxes=box, mask_input=tiny_cells.mask_logits(inside, frame=first), frame=first,
                                grow=False)
    target = tiny_cells.frame_for(boxes=box)
    assert carried.frame == target != first
    direct = tiny_cells.predict(boxes=box, mask_input=tiny_cells.mask_logits(inside, frame=target), frame=target,
                               grow=False)
    assert mask_iou(full_best(carried), full_best(direct)) >= 0.95
    far = [[2.7 * tile, 2.7 * tile]]
    both = tiny_cells.predict(points=[[row, cols.min() + 15.0]] + far,
                             mask_input=tiny_cells.mask_logits(inside, frame=first), frame=first, grow=False)
    frame = both.frame
    assert frame.row0 <= row and frame.col0 <= cols.min() + 15 and frame.row1 > far[0][0] and frame.col1 > far[0][1]


def test_only_the_tiles_a_prompt_needs_are_read_and_encoded(tiny_cells):
    """A dask image of 16 chunks: set_image reads a sample for the contrast limits only when none are given; a
    click reads and encodes one tile."""
    import dask
    import dask.array as da

    tile = tiny_cells.geometry.default_tile  # chunks of a tile, 4 x 4 of them
    image, labels = synthetic_cells((4 * tile, 4 * tile), seed=930_003, radius_range=(10.0, 15.0),
                                    n_cells=300 * (tile // 256) ** 2)
    reads = []

    def chunk(r, c):
        reads.append((r, c))
        return image[r: r + tile, c: c + tile]

    lazy = da.block([[da.from_delayed(dask.delayed(chunk)(r, c), (tile, tile), image.dtype)
                      for c in range(0, 4 * tile, tile)] for r in range(0, 4 * tile, tile)])
    runs = []
    hook = tiny_cells.model.vision_encoder.register_forward_hook(lambda *args: runs.append(1))
    try:
        tiny_cells.set_image(lazy, contrast_limits=(float(image.min()), float(image.max())))
        assert not reads and not runs
        cell = sample_cells(labels, 1)[0]
        rows, cols = np.nonzero(labels == cell)
        tiny_cells.predict(points=[[rows[0], cols[0]]])
        assert len(runs) == 1 and 1 <= len(set(reads)) <= 4  # one tile: at most the 4 chunks under it
        assert tiny_cells.precompute((0, 0, 300, 300)) >= 1  # the tiles over that region
        assert tiny_cells.precompute((0, 0, 300, 300)) == 0  # now cached
    finally:
        hook.remove()


def test_tiling_settings_and_bad_input(tiny_cells):
    image = np.zeros((600, 600), np.uint16)
    tiny_cells.tiling = TilingSettings(mode="whole")
    tiny_cells.set_image(image)
    assert not tiny_cells.tiled and len(tiny_cells.frames()) == 1
    tiny_cells.tiling = TilingSettings(mode="tiles", tile_size=128, halo=16)
    tiny_cells.set_image(image)
    grid = tiny_cells.tile_grid
    assert tiny_cells.tiled and (grid.tile, grid.halo) == (128, 16)
    frames = tiny_cells.frames()
    covered = np.zeros((600, 600), int)
    for frame in frames:
        covered[frame.slices] += 1
        assert frame.size == (128, 128)  # full tiles, the last ones shifted back
    assert covered.min() >= 1
    with pytest.raises(ValueError, match="halo"):  # an explicit tile: refused at once
        TilingSettings(mode="tiles", tile_size=128, halo=64)
    tile = tiny_cells.geometry.default_tile
    tiny_cells.tiling = TilingSettings(mode="tiles", halo=tile // 2)  # half the model's tile: refused when used
    with pytest.raises(ValueError, match="halo"):
        tiny_cells.set_image(image)
    tiny_cells.tiling = TilingSettings()


@pytest.mark.slow
def test_segment_everything_in_tiles_finds_the_cells_once(large_cells, tiny_cells, tmp_path):
    import zarr

    image, labels = large_cells[0][:1024, :1024], large_cells[1][:1024, :1024]
    out = zarr.create_array(tmp_path / "labels.zarr", shape=image.shape, chunks=(512, 512), dtype="uint32")
    # a grid point every 16 px of the image, whatever the model's tile size
    result = segment_everything(tiny_cells, image, pred_iou_thresh=0.7, stability_score_thresh=0.8, method="grid",
                                points_per_side=tiny_cells.geometry.default_tile // 16, out=out)
    assert result.labels is out and tiny_cells.tiled
    found = np.asarray(out[:])
    tile = tiny_cells.tile_grid.tile  # objects are kept cropped, never image-sized
    assert all(obj.mask.shape[0] <= tile and obj.mask.shape[1] <= tile for obj in result.objects)
    cells = [c for c in range(1, labels.max() + 1) if (labels == c).sum() >= 150]
    recovered = 0
    for cell in cells:
        target = labels == cell
        ids = np.unique(found[target])
        recovered += max((mask_iou(found == k, target) for k in ids if k), default=0) >= 0.7
    assert len(cells) >= 300 and recovered >= 0.8 * len(cells), (recovered, len(cells))
    # cells crossing tile borders come out whole, each as one object, as often as the others
    straddling = straddling_cells(labels, tiny_cells.tile_grid, 80)
    whole, split = 0, 0
    for cell in straddling:
        target = labels == cell
        ids, counts = np.unique(found[target], return_counts=True)
        whole += max((mask_iou(found == k, target) for k in ids if k), default=0) >= 0.7
        split += sum(1 for k, n in zip(ids, counts) if k and n > 0.2 * target.sum()) > 1
    assert len(straddling) >= 60 and whole >= 0.8 * len(straddling) and split <= 0.05 * len(straddling), \
        (whole, split, len(straddling))


def test_embeddings_kept_on_disk_serve_a_new_session(tmp_path):
    """A second predictor (a napari restart) on the same store runs no encoder and gives the same masks; a corrupt
    entry is recomputed; another model's entries are not used."""
    from napari_sam.core.embeddings import EmbeddingStore

    tile = Predictor.from_pretrained("tiny-cells", device="cpu").geometry.default_tile
    side = 2 * tile + 100  # tiled: more than twice the tile
    image, labels = synthetic_cells((side, side), seed=930_004, radius_range=(10.0, 15.0),
                                    n_cells=round(120 * side**2 / 700**2))
    cell = sample_cells(labels, 1)[0]
    rows, cols = np.nonzero(labels == cell)
    point = [[rows[0], cols[0]]]

    def session(model="tiny-cells"):
        predictor = Predictor.from_pretrained(model, device="cpu", store=EmbeddingStore(tmp_path / "store"))
        runs = []
        predictor.model.vision_encoder.register_forward_hook(lambda *args: runs.append(1))
        predictor.set_image(image)
        return predictor, runs

    first, runs = session()
    assert first.tiled and first.precompute() == len(first.frames()) == len(runs)
    expected = full_best(first.predict(points=point))
    second, runs = session()
    assert second.precompute() == 0 and not runs  # all from disk
    assert np.array_equal(full_best(second.predict(points=point)), expected)
    chunk = next(p for p in (tmp_path / "store").rglob("c*") if p.is_file() and ".napari-sam-tmp" not in str(p))
    chunk.write_bytes(b"\0" * chunk.stat().st_size)  # damaged on disk
    third, runs = session()
    assert third.precompute() == 1 and len(runs) == 1  # the damaged one only
    assert np.array_equal(full_best(third.predict(points=point)), expected)


def test_another_model_on_the_same_store_computes_its_own(tmp_path, tiny_checkpoints):
    from napari_sam.core.embeddings import EmbeddingStore

    store = EmbeddingStore(tmp_path / "store")
    image = synthetic_cells((100, 100), seed=930_005)[0]
    for folder in (tiny_checkpoints[64], tiny_checkpoints[256]):
        predictor = Predictor.from_pretrained(folder, device="cpu", store=store, tiling=TilingSettings(mode="whole"))
        predictor.set_image(image)
        assert predictor.precompute() == 1
    assert len(store) == 2 and len(store.summary()["models"]) == 2


@pytest.mark.parametrize("method", ["grid", "instances", "instances+sam"])
def test_objects_no_tile_holds_whole_are_recovered_once(tiny_cells, method):
    """Cells wider than a tile's core are cut by an inner border in every tile that sees them, so the crop-edge rule
    dropped each of them everywhere (once: none of these six cells was found in tiles). Their cut candidates (the
    grid's, or the pieces of the instance head's objects) are decoded again in a window around the object, as a
    prompt is, and each found cell is one object."""
    tiled = Predictor(tiny_cells.model, tiny_cells.geometry, "cpu", checkpoint="tiny-cells",
                      recommended=tiny_cells.recommended, tiling=TilingSettings(mode="tiles", tile_size=128, halo=16))
    image, labels = synthetic_cells((500, 500), seed=5, radius_range=(55.0, 70.0), n_cells=6)
    core = tiled.frames  # (a 96-px core: every cell is wider)
    result = segment_everything(tiled, image, points_per_side=16, pred_iou_thresh=0.7, stability_score_thresh=0.85,
                                method=method)
    assert tiled.tiled and callable(core)
    found = np.asarray(result.labels)
    cells = [cell for cell in range(1, labels.max() + 1) if (labels == cell).any()]
    assert all(np.ptp(np.nonzero(labels == cell)[0]) > 96 for cell in cells)
    matches = []
    for cell in cells:
        target = labels == cell
        ids = [k for k in np.unique(found[target]) if k]
        matches.append(sum(mask_iou(found == k, target) >= 0.5 for k in ids))
    assert sum(m >= 1 for m in matches) >= 3 and max(matches) == 1, matches
