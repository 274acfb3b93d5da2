"""Committing masks into a napari Labels layer as new objects, in one undoable step.

Writes go through ``Labels.data_setitem`` inside ``Labels.block_history``, so one Ctrl+Z in the Labels layer
removes a whole commit and redo puts it back. Nothing else here changes labels data.
"""

from __future__ import annotations

import numpy as np

from .transforms import apply, layer_to_layer


def _plane_indices(mask: np.ndarray, plane_index: tuple[int, ...], matrix: np.ndarray | None,
                   labels_shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Labels-data indices covered by ``mask`` (a plane of the image at ``plane_index``).

    On the image's own grid the mask's pixels are taken as they are. On another grid, every labels pixel
    whose centre falls inside a mask pixel is taken (pull sampling: no gaps on a finer grid).
    """
    rows, cols = np.nonzero(mask)
    if matrix is None:
        return tuple(np.full(rows.shape, value, dtype=np.intp) for value in plane_index) + (rows, cols)
    if rows.size == 0:
        return ()
    lead = list(plane_index)
    corners = np.array([lead + [r, c] for r in (rows.min() - 0.5, rows.max() + 0.5)
                        for c in (cols.min() - 0.5, cols.max() + 0.5)], dtype=float)
    if lead:  # the plane's thickness along the leading axes
        corners = np.concatenate([corners + offset for offset in (-0.5, 0.5)])
    reach = apply(matrix, corners)
    low = np.clip(np.floor(reach.min(axis=0)).astype(int), 0, None)
    high = np.minimum(np.ceil(reach.max(axis=0)).astype(int) + 1, labels_shape)
    if (high <= low).any():
        return ()
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high)], indexing="ij"), axis=-1)
    candidates = grid.reshape(-1, len(labels_shape))
    back = np.rint(apply(np.linalg.inv(matrix), candidates)).astype(np.intp)
    on_plane = (back[:, : len(lead)] == np.asarray(lead, dtype=np.intp)).all(axis=1)
    inside = on_plane & (back[:, -2] >= 0) & (back[:, -2] < mask.shape[0]) & (back[:, -1] >= 0) & (
        back[:, -1] < mask.shape[1])
    hit = np.zeros(len(candidates), dtype=bool)
    hit[inside] = mask[back[inside, -2], back[inside, -1]]
    return tuple(candidates[hit].T)


def _grid_matrix(labels_layer, image_layer) -> np.ndarray | None:
    """Image data -> labels data matrix, or None when both share one grid."""
    if labels_layer.ndim != image_layer.ndim:
        raise ValueError(f"the labels layer has {labels_layer.ndim} dimensions and the image "
                         f"{image_layer.ndim}: choose or create a labels layer that matches the image.")
    matrix = layer_to_layer(image_layer, labels_layer)
    return None if np.allclose(matrix, np.eye(len(matrix))) else matrix


def _write(labels_layer, matrix, planes, new_id: int, overwrite: bool) -> bool:
    """Write ``new_id`` over every (plane_index, mask) of ``planes``; whether any pixel was written."""
    data, written = labels_layer.data, False
    for plane_index, mask in planes:
        indices = _plane_indices(np.asarray(mask, dtype=bool), tuple(plane_index), matrix, data.shape)
        if not overwrite and len(indices) and indices[0].size:
            free = np.asarray(data[indices]) == 0
            indices = tuple(axis[free] for axis in indices)
        if len(indices) and indices[0].size:
            labels_layer.data_setitem(indices, new_id)
            written = True
    return written


def _next_id(labels_layer) -> int:
    data = labels_layer.data
    return int(np.max(data)) + 1 if data.size else 1


def commit_masks(labels_layer, image_layer, masks: np.ndarray, plane_index: tuple[int, ...] = (),
                 overwrite: bool = False) -> list[int]:
    """Write each (H, W) mask of ``masks`` as a new object of ``labels_layer``: one undo step for all.

    Args:
        labels_layer: the target napari Labels layer (any transform, same dimensionality as the image).
        image_layer: the layer whose data pixels the masks are in.
        masks: (k, H, W) bool, in the image's data pixels of the plane at ``plane_index``.
        plane_index: the index of the image's non-displayed leading axes ((), for 2D images).
        overwrite: whether the new objects may replace existing labels; by default they fill only label 0.

    Returns:
        The new label ids, one per mask (max + 1, max + 2, ...); masks that write nothing get no id.
    """
    matrix = _grid_matrix(labels_layer, image_layer)
    next_id, ids = _next_id(labels_layer), []
    with labels_layer.block_history():
        for mask in np.asarray(masks, dtype=bool).reshape(-1, *np.shape(masks)[-2:]):
            if _write(labels_layer, matrix, [(plane_index, mask)], next_id, overwrite):
                ids.append(next_id)
                next_id += 1
    return ids


def commit_object(labels_layer, image_layer, planes, overwrite: bool = False) -> int | None:
    """Write one object spanning several planes (``[(plane_index, (H, W) mask), ...]``) under one new id, in
    one undo step. Returns the id, or None when nothing could be written."""
    matrix = _grid_matrix(labels_layer, image_layer)
    new_id = _next_id(labels_layer)
    with labels_layer.block_history():
        written = _write(labels_layer, matrix, planes, new_id, overwrite)
    return new_id if written else None


def object_under(labels_layer, image_layer, plane_index: tuple[int, ...], mask: np.ndarray,
                 min_fraction: float = 0.5) -> int | None:
    """The object a corrected prompt belongs to: the label id on the plane at ``plane_index`` (of the image)
    that covers at least ``min_fraction`` of ``mask``, or has at least that fraction of its pixels on the plane
    inside ``mask`` (a truncated object); the one overlapping most when several do. None when there is none."""
    matrix = _grid_matrix(labels_layer, image_layer)
    data, mask = labels_layer.data, np.asarray(mask, dtype=bool)
    under = _plane_indices(mask, tuple(plane_index), matrix, data.shape)
    if not len(under) or not under[0].size:
        return None
    ids, overlap = np.unique(np.asarray(data[under]), return_counts=True)
    overlap, ids = overlap[ids != 0], ids[ids != 0]
    if not ids.size:
        return None
    plane = np.asarray(data[_plane_indices(np.ones_like(mask), tuple(plane_index), matrix, data.shape)])
    sizes = np.array([(plane == value).sum() for value in ids])
    fraction = np.maximum(overlap / under[0].size, overlap / sizes)
    candidates = np.nonzero(fraction >= min_fraction)[0]
    return int(ids[candidates[np.argmax(overlap[candidates])]]) if candidates.size else None


def replace_object(labels_layer, image_layer, object_id: int, planes, cleared_planes,
                   overwrite: bool = False) -> bool:
    """Replace object ``object_id`` on some planes, in one undo step: its pixels on every plane index of
    ``cleared_planes`` go back to 0, then ``planes`` (``[(plane_index, (H, W) mask), ...]``) are written under
    the same id. Returns whether anything changed."""
    matrix = _grid_matrix(labels_layer, image_layer)
    data, changed = labels_layer.data, False
    image = image_layer.data[0] if image_layer.multiscale else image_layer.data
    everything = np.ones(image.shape[-3:-1] if image_layer.rgb else image.shape[-2:], dtype=bool)
    with labels_layer.block_history():
        for plane_index in cleared_planes:
            indices = _plane_indices(everything, tuple(plane_index), matrix, data.shape)
            if not len(indices) or not indices[0].size:
                continue
            own = np.asarray(data[indices]) == object_id
            if own.any():
                labels_layer.data_setitem(tuple(axis[own] for axis in indices), 0)
                changed = True
        changed |= _write(labels_layer, matrix, planes, object_id, overwrite)
    return changed
