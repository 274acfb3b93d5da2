"""Dask-, zarr- and multiscale-backed layers in the docks (under Xvfb): read only where needed, never whole; a small
preview; commits into zarr-backed labels, all or nothing, undoable."""

import threading

import dask
import dask.array as da
import numpy as np
import pytest

from napari_sam.bridge.labels_writer import commit_masks
from napari_sam.core.objects import mask_iou
from napari_sam.demo import synthetic_cells

from helpers import Recorded, cell_point, largest_cells, settle


def counted(array, chunk, reads, name):
    """``array`` as a dask array of ``chunk``-sided blocks that records each block it reads in ``reads``."""
    def block(index, region):
        reads.append((name, index, threading.current_thread().name))
        return array[region]

    rows, cols = array.shape[-2:]
    lead = array.shape[:-2]
    blocks = np.empty(lead + (rows // chunk, cols // chunk), dtype=object)
    for index in np.ndindex(*blocks.shape):
        *outer, r, c = index
        region = tuple(outer) + (slice(r * chunk, (r + 1) * chunk), slice(c * chunk, (c + 1) * chunk))
        shape = (1,) * len(outer) + (chunk, chunk)
        blocks[index] = da.from_delayed(dask.delayed(block)(index, region), shape[len(outer):], array.dtype)
        if outer:
            blocks[index] = blocks[index][(None,) * len(outer)]
    return da.block(blocks.tolist())


def test_a_multiscale_layer_is_read_only_around_the_prompt(session, qtbot):
    """A 2048² pyramid in chunks of the model's tile: napari shows a coarse level; the dock reads level 0 only in the
    tile of the click, and the preview is a tile-sized layer placed over it."""
    from helpers import tiny_cells_tile

    tile = tiny_cells_tile()
    image, labels = synthetic_cells((2048, 2048), seed=950_001, radius_range=(10.0, 15.0), n_cells=1500)
    reads = []
    pyramid = [counted(image, tile, reads, "level0"), counted(image[::2, ::2], tile, reads, "level1"),
               counted(image[::4, ::4], tile, reads, "level2")]
    viewer, layer, widget = session(pyramid, show=True, multiscale=True, contrast_limits=(0, float(image.max())),
                                    scale=(0.5, 0.5))
    cell = largest_cells(labels, 1)[0]
    reads.clear()
    widget.points_picker.value.add(np.asarray(layer.data_to_world(cell_point(labels, cell))) / 0.5)
    assert widget.shown_request != widget.predict_request  # a lazy plane is decoded on a worker, never on the UI
    settle(qtbot, widget)
    level0 = {index for name, index, _ in reads if name == "level0"}
    assert 1 <= len(level0) <= 9, len(level0)  # the click's tile (and some of its neighbours)
    assert all(thread != "MainThread" for name, _, thread in reads if name == "level0")
    assert widget.preview_layer.data.shape == (tile, tile)
    masks = widget.shown_masks()
    assert masks.shape == (1, tile, tile)
    (new,) = widget.commit()
    committed = widget.labels_picker.value.data
    assert committed.shape == (2048, 2048) and np.allclose(widget.labels_picker.value.scale, (0.5, 0.5))
    assert mask_iou(committed == new, labels == cell) >= 0.75


def test_a_stack_is_read_plane_by_plane_and_tile_by_tile(session, qtbot):
    """An 8-plane stack of planes over twice the model's tile: napari reads the plane it shows; the dock reads, on
    its workers, only tiles of the shown plane and of its neighbours, never a whole plane and never the whole
    stack."""
    from helpers import tiny_cells_tile

    tile = tiny_cells_tile()
    side = 2 * tile + 256  # 768 for a 256-pixel model
    stack, truth = synthetic_cells((8, side, side), seed=950_002, ndim=3, radius_range=(10.0, 15.0),
                                   n_cells=round(250 * side**2 / 1024**2))
    lazy = Recorded(stack)
    viewer, layer, widget = session(lazy, contrast_limits=(0, float(stack.max())))
    lazy.reads.clear()
    viewer.dims.set_point(0, 4)
    settle(qtbot, widget)
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    ours = [(plane, shape) for thread, plane, shape in lazy.reads if thread != "MainThread"]  # napari displays
    assert ours and {plane for plane, _ in ours} <= {3, 4, 5}, ours  # on the UI thread; the dock reads on workers
    assert all(shape[0] <= tile and shape[1] <= tile for _, shape in ours)
    cell = largest_cells(truth[4], 1)[0]
    widget.points_picker.value.add(np.r_[4, cell_point(truth[4], cell)])
    settle(qtbot, widget)
    (new,) = widget.commit()
    assert mask_iou(widget.labels_picker.value.data[4] == new, truth[4] == cell) >= 0.75


def test_commits_into_zarr_backed_labels_are_all_or_nothing_and_undoable(session, qtbot, tmp_path):
    import zarr

    image, labels = synthetic_cells((200, 240), seed=950_003)
    viewer, layer, widget = session(image)
    store = zarr.create_array(tmp_path / "labels.zarr", shape=(200, 240), chunks=(64, 64), dtype="uint32")
    target = viewer.add_labels(store, name="on disk")
    widget.labels_picker.value = target
    viewer.layers.selection.active = widget.points_picker.value
    first, second = largest_cells(labels, 2)
    widget.points_picker.value.add(cell_point(labels, first))
    settle(qtbot, widget)
    assert widget.commit() == [1]
    on_disk = zarr.open_array(tmp_path / "labels.zarr", mode="r")[:]
    assert mask_iou(on_disk == 1, labels == first) >= 0.75
    widget.points_picker.value.add(cell_point(labels, second))
    settle(qtbot, widget)
    assert widget.commit() == [2]
    target.undo()
    assert not (np.asarray(store[:]) == 2).any() and (np.asarray(store[:]) == 1).any()
    small = viewer.add_labels(zarr.create_array(tmp_path / "small.zarr", shape=(120, 240), chunks=(64, 64),
                                                dtype="uint32"), name="smaller than the image")
    masks = np.zeros((2, 200, 240), dtype=bool)
    masks[0, 10:20, 10:20] = True
    masks[1, 150:190, 10:20] = True  # below the 120 rows of the labels
    with pytest.raises(ValueError, match="outside"):
        commit_masks(small, layer, masks)
    assert not np.asarray(small.data[:]).any()


def test_a_changed_image_shape_gives_clear_messages_and_loses_nothing(session, qtbot, notifications):
    """The image layer's data is replaced by one of another shape: the dock embeds the new data; a commit into the
    old labels layer, which no longer covers the image, is refused and writes nothing."""
    image, labels = synthetic_cells((200, 240), seed=950_004)
    viewer, layer, widget = session(image)
    cell = largest_cells(labels, 1)[0]
    widget.points_picker.value.add(cell_point(labels, cell))
    settle(qtbot, widget)
    (first,) = widget.commit()
    target = widget.labels_picker.value
    kept = target.data.copy()
    bigger, bigger_labels = synthetic_cells((300, 320), seed=950_005)
    layer.data = bigger
    settle(qtbot, widget)
    far = largest_cells(bigger_labels[220:], 1)[0]
    widget.points_picker.value.add(cell_point(bigger_labels, far))
    settle(qtbot, widget)
    assert widget.preview is not None and widget.commit() == []
    assert any("outside the labels layer" in n.message for n in notifications())
    assert np.array_equal(target.data, kept)


def test_tiling_and_store_options_in_the_dock(session, qtbot, notifications, tmp_path, monkeypatch):
    image, labels = synthetic_cells((200, 240), seed=950_006)
    viewer, layer, widget = session(image)
    options = widget.model.tiles_and_store
    assert widget.session.store is not None and "Store:" in options.store_status.value  # on by default
    options.tiling.controls["mode"].value = "tiles"
    assert widget.predictor.tiling.mode == "tiles"
    tile = widget.predictor.geometry.default_tile
    for mode in ("tiles", "auto"):  # a halo of half tiny-cells' tile: named, and not applied
        options.tiling.controls["mode"].value = mode
        before = len(notifications())
        options.tiling.controls["halo"].value = tile // 2
        assert any("halo" in n.message for n in notifications()[before:])
        assert widget.predictor.tiling.halo == 0 and widget.predictor.tiling.mode == mode
        widget.model._embed_if_tiled()  # what the camera's rest calls
        options.tiling.controls["halo"].value = 0
    options.tiling.controls["mode"].value = "tiles"
    widget.points_picker.value.add(cell_point(labels, largest_cells(labels, 1)[0]))
    settle(qtbot, widget)
    assert widget.shown_masks() is not None
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    options.store_folder.value = str(blocker)
    assert any(str(blocker) in n.message for n in notifications())
    assert widget.session.store is None and not options.use_store.value
    assert "memory only" in options.store_status.value
    options.store_folder.value = str(tmp_path / "store")
    options.use_store.value = True
    assert widget.predictor.store is not None and widget.predictor.store.root == tmp_path / "store"


def test_labels_too_large_for_memory_go_to_zarr_on_disk(monkeypatch):
    from napari_sam.widgets import prompt_layers

    monkeypatch.setattr(prompt_layers, "LARGE_LABELS_BYTES", 1000)
    array, folder = prompt_layers.labels_array((3, 40, 50), "big image labels")
    assert folder is not None and folder.exists() and array.shape == (3, 40, 50) and array.dtype == np.uint32
    assert not np.asarray(array[:]).any()
    small, none = prompt_layers.labels_array((4, 4), "small")
    assert none is None and isinstance(small, np.ndarray)
