"""Writing into a napari Labels layer: all or nothing, in one undo step.

Every change is planned first on a copy of the region it touches: the masks are mapped to labels pixels, checked
(inside the layer, ids that the dtype can hold), and written in order on the copy. Only then are the changed
pixels written, in one ``Labels.data_setitem`` call inside ``Labels.block_history``: one Ctrl+Z in the Labels
layer undoes the whole change and redo puts it back. A change that fails its checks writes nothing and leaves
the undo history as it was. Nothing else in napari-sam changes labels data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import LabelsFullError
from .labels_grid import grid_matrix, labels_on_plane, outside_labels, plane_coverage, plane_indices

#: A plane of the image and a mask on it: ``(plane_index, (H, W) bool mask)``.
PlaneMask = tuple[tuple[int, ...], np.ndarray]


@dataclass
class _Write:
    """Set ``value`` (one id, or one per index) at ``indices`` (labels data), only where the current value is one
    of ``only_where`` (None: everywhere)."""

    value: int | np.ndarray
    indices: tuple[np.ndarray, ...]
    only_where: int | list[int] | None = None


class _Edit:
    """Writes applied in order to a copy of the region of the labels data they touch."""

    def __init__(self, labels_layer, index_sets: list[tuple[np.ndarray, ...]]):
        self.layer = labels_layer
        data = labels_layer.data
        used = [indices for indices in index_sets if indices and indices[0].size]
        if not used:
            self.low, self.original = None, None
            return
        self.low = np.min([[axis.min() for axis in indices] for indices in used], axis=0)
        high = np.max([[axis.max() for axis in indices] for indices in used], axis=0) + 1
        self.original = np.asarray(data[tuple(slice(a, b) for a, b in zip(self.low, high))])
        self.work = self.original.copy()

    def write(self, write: _Write) -> int:
        """Apply ``write`` to the copy; returns how many pixels it set.

        Raises LabelsFullError when the labels' dtype cannot hold the value of a write that sets any pixel."""
        if self.low is None or not write.indices[0].size:
            return 0
        local = tuple(axis - start for axis, start in zip(write.indices, self.low))
        value = write.value
        if write.only_where is not None:
            selected = np.isin(self.work[local], write.only_where)
            local = tuple(axis[selected] for axis in local)
            value = value[selected] if np.ndim(value) else value
        if local[0].size:
            _check_fits(self.layer, int(np.max(value)))
            self.work[local] = value
        return int(local[0].size)

    def apply(self) -> bool:
        """Write the changed pixels in one undoable step; whether anything changed."""
        if self.low is None:
            return False
        changed = np.nonzero(self.work != self.original)
        if not changed[0].size:
            return False
        indices = tuple(axis + start for axis, start in zip(changed, self.low))
        with self.layer.block_history():
            self.layer.data_setitem(indices, self.work[changed])
        return True


def _check_fits(labels_layer, largest_id: int) -> None:
    dtype = np.dtype(labels_layer.data.dtype)
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(f"The labels layer {labels_layer.name!r} holds {dtype} data: labels must be integers.")
    if not np.iinfo(dtype).min <= largest_id <= np.iinfo(dtype).max:
        raise LabelsFullError(
            f"The labels layer {labels_layer.name!r} is {dtype}: it cannot hold id {largest_id} (its largest id is "
            f"{np.iinfo(dtype).max}). Convert it to a wider type (for example uint32) and commit again; nothing "
            "was written.")


def next_id(labels_layer) -> int:
    """The id a new object gets: one more than the largest id of the layer (lazy data such as zarr is scanned
    chunk by chunk, never loaded whole)."""
    data = labels_layer.data
    if not np.prod(data.shape):
        return 1
    if isinstance(data, np.ndarray):
        return int(np.max(data)) + 1
    import dask.array as da

    chunks = getattr(data, "chunks", None) or "auto"
    return int(da.from_array(data, chunks=chunks).max().compute()) + 1


def _mapped(labels_layer, image_layer, planes: list[PlaneMask]) -> list[tuple[np.ndarray, ...]]:
    """Labels indices of each (plane_index, mask), after checking that every mask fits in the labels layer."""
    matrix = grid_matrix(labels_layer, image_layer)
    shape = labels_layer.data.shape
    mapped = []
    for number, (plane_index, mask, *offset) in enumerate(planes, start=1):
        mask, offset = np.asarray(mask, dtype=bool), tuple(offset[0]) if offset else (0, 0)
        if outside_labels(mask, tuple(plane_index), matrix, shape, offset):
            raise ValueError(
                f"Object {number} reaches outside the labels layer {labels_layer.name!r} (shape {shape}): choose a "
                "labels layer that covers the image. Nothing was written.")
        mapped.append(plane_indices(mask, tuple(plane_index), matrix, shape, offset))
    return mapped


def commit_masks(labels_layer, image_layer, masks: np.ndarray, plane_index: tuple[int, ...] = (),
                 overwrite: bool = False, offset: tuple[int, int] = (0, 0), per_mask: bool = False) -> list:
    """Write each (H, W) mask of ``masks`` as a new object of ``labels_layer``: all or nothing, one undo step.

    Args:
        labels_layer: the target napari Labels layer (any transform, same dimensionality as the image).
        image_layer: the layer whose data pixels the masks are in.
        masks: (k, h, w) bool, in the image's data pixels of the plane at ``plane_index``, their top-left pixel at
            image pixel ``offset`` (row, col): image-sized masks by default, or the window of a prediction.
        plane_index: the index of the image's non-displayed leading axes ((), for 2D images).
        overwrite: whether the new objects may replace existing labels; by default they fill only label 0 (and
            an earlier mask of the same commit keeps its pixels).

    Returns:
        The new label ids (max + 1, max + 2, ...), one per mask that wrote anything; with ``per_mask``, one entry
        per mask, None for a mask that wrote nothing.

    Nothing is written when it raises.

    Raises:
        ValueError: a mask reaches outside the labels layer, or the layers do not match.
        LabelsFullError: the labels' dtype cannot hold the new ids.
    """
    masks = np.asarray(masks, dtype=bool).reshape(-1, *np.shape(masks)[-2:])
    mapped = _mapped(labels_layer, image_layer, [(plane_index, mask, offset) for mask in masks])
    edit, new_id, ids = _Edit(labels_layer, mapped), next_id(labels_layer), []
    for indices in mapped:
        if edit.write(_Write(new_id, indices, None if overwrite else 0)):
            ids.append(new_id)
            new_id += 1
        elif per_mask:
            ids.append(None)
    edit.apply()
    return ids


def commit_object(labels_layer, image_layer, planes: list[PlaneMask], overwrite: bool = False) -> int | None:
    """Write one object spanning several planes under one new id, all or nothing, in one undo step.

    Returns the id, or None when nothing could be written. Raises as :func:`commit_masks`."""
    mapped = _mapped(labels_layer, image_layer, planes)
    edit, new_id = _Edit(labels_layer, mapped), next_id(labels_layer)
    written = sum(edit.write(_Write(new_id, indices, None if overwrite else 0)) for indices in mapped)
    edit.apply()
    return new_id if written else None


def replace_object(labels_layer, image_layer, object_id: int, planes: list[PlaneMask], cleared_planes,
                   overwrite: bool = False, region: tuple[int, int, int, int] | None = None) -> bool:
    """Replace object ``object_id`` on some planes, all or nothing, in one undo step: its pixels on every plane
    index of ``cleared_planes`` go back to 0 (within ``region``, (row0, col0, row1, col1) image pixels holding the
    object there; default: the whole plane), then ``planes`` are written under the same id (only into label 0,
    unless ``overwrite``). Returns whether anything changed."""
    if region is None:
        image = image_layer.data[0] if image_layer.multiscale else image_layer.data
        region = (0, 0, *(image.shape[-3:-1] if image_layer.rgb else image.shape[-2:]))
    row0, col0, row1, col1 = (int(v) for v in region)
    area = np.ones((row1 - row0, col1 - col0), dtype=bool)
    matrix = grid_matrix(labels_layer, image_layer)
    clear_indices = [plane_indices(area, tuple(index), matrix, labels_layer.data.shape, (row0, col0))
                     for index in cleared_planes]
    mapped = _mapped(labels_layer, image_layer, planes)
    edit = _Edit(labels_layer, clear_indices + mapped)
    for indices in clear_indices:
        edit.write(_Write(0, indices, object_id))
    for indices in mapped:
        edit.write(_Write(object_id, indices, None if overwrite else 0))
    return edit.apply()


def replace_plane_objects(labels_layer, image_layer, planes) -> bool:
    """Replace objects plane by plane, all or nothing, in one undo step.

    Args:
        planes: ``[(plane_index, new_plane, ids), ...]``: on each plane of the image, the pixels of objects
            ``ids`` are cleared, then every labelled pixel of ``new_plane`` ((H, W) integer labels on the image
            plane, 0 where none) is written, over anything.

    Returns whether anything changed. Raises as :func:`commit_masks`.
    """
    matrix = grid_matrix(labels_layer, image_layer)
    shape = labels_layer.data.shape
    steps = []
    for plane_index, new_plane, ids in planes:
        plane_index, new_plane = tuple(plane_index), np.asarray(new_plane)
        labelled = new_plane != 0
        _mapped(labels_layer, image_layer, [(plane_index, labelled)])  # checks that it fits
        covered, rows, cols = plane_coverage(labelled, plane_index, matrix, shape)
        whole = plane_indices(np.ones(new_plane.shape, dtype=bool), plane_index, matrix, shape)
        steps += [_Write(0, whole, [int(i) for i in ids]), _Write(new_plane[rows, cols], covered)]
    edit = _Edit(labels_layer, [step.indices for step in steps])
    for step in steps:
        edit.write(step)
    return edit.apply()


def extend_objects(labels_layer, image_layer, planes, ids, overwrite: bool = False) -> bool:
    """Write objects that keep their ids through several planes, all or nothing, in one undo step.

    Args:
        planes: ``[(plane_index, new_plane), ...]``: on each plane of the image, the pixels of objects ``ids`` are
            cleared, then every labelled pixel of ``new_plane`` ((H, W) integer labels on the image plane, 0 where
            none) is written: only into label 0 (or the cleared pixels), unless ``overwrite``.
        ids: the objects being written, whose old pixels on these planes go.

    Returns whether anything changed. Raises as :func:`commit_masks`.
    """
    matrix = grid_matrix(labels_layer, image_layer)
    shape = labels_layer.data.shape
    ids = [int(i) for i in ids]
    steps = []
    for plane_index, new_plane in planes:
        plane_index, new_plane = tuple(plane_index), np.asarray(new_plane)
        labelled = new_plane != 0
        _mapped(labels_layer, image_layer, [(plane_index, labelled)])  # checks that it fits
        covered, rows, cols = plane_coverage(labelled, plane_index, matrix, shape)
        whole = plane_indices(np.ones(new_plane.shape, dtype=bool), plane_index, matrix, shape)
        steps += [_Write(0, whole, ids), _Write(new_plane[rows, cols], covered, None if overwrite else 0)]
    edit = _Edit(labels_layer, [step.indices for step in steps])
    for step in steps:
        edit.write(step)
    return edit.apply()


def object_under(labels_layer, image_layer, plane_index: tuple[int, ...], mask: np.ndarray,
                 min_fraction: float = 0.5) -> int | None:
    """The object a corrected prompt belongs to: the label id on the plane at ``plane_index`` (of the image)
    that covers at least ``min_fraction`` of ``mask``, or has at least that fraction of its pixels on the plane
    inside ``mask`` (a truncated object); the one overlapping most when several do. None when there is none."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    plane = labels_on_plane(labels_layer, image_layer, tuple(plane_index), mask.shape)
    ids, overlap = np.unique(plane[mask], return_counts=True)
    overlap, ids = overlap[ids != 0], ids[ids != 0]
    if not ids.size:
        return None
    sizes = np.array([np.count_nonzero(plane == value) for value in ids])
    fraction = np.maximum(overlap / np.count_nonzero(mask), overlap / sizes)
    candidates = np.nonzero(fraction >= min_fraction)[0]
    return int(ids[candidates[np.argmax(overlap[candidates])]]) if candidates.size else None


def widened(labels_layer, dtype=np.uint32) -> None:
    """Convert the labels layer's data to ``dtype`` (a wider integer type), keeping every label.

    napari clears a layer's undo history when its data is replaced, so callers ask the user first."""
    labels_layer.data = np.asarray(labels_layer.data).astype(dtype)
