"""Between an image's data pixels and a Labels layer's, which may lie on another grid (any affine transform).

A mask is a plane of the image (the plane at ``plane_index`` of its non-displayed leading axes), in (row, col)
image data pixels. Labels pixels are found by pull sampling: a labels pixel belongs to the mask when its centre
falls inside a mask pixel, so a finer labels grid has no gaps. Reading labels back onto an image plane samples
the labels pixel under each image pixel's centre. Only the region that is needed is read.
"""

from __future__ import annotations

import numpy as np

from .transforms import apply, layer_to_layer


def grid_matrix(labels_layer, image_layer) -> np.ndarray | None:
    """Image data -> labels data homogeneous matrix, or None when both share one grid.

    Raises:
        ValueError: the layers have different dimensionality.
    """
    if labels_layer.ndim != image_layer.ndim:
        raise ValueError(f"the labels layer {labels_layer.name!r} has {labels_layer.ndim} dimensions and the image "
                         f"{image_layer.ndim}: choose or create a labels layer that matches the image.")
    matrix = layer_to_layer(image_layer, labels_layer)
    return None if np.allclose(matrix, np.eye(len(matrix))) else matrix


def _reach(matrix: np.ndarray, plane_index: tuple[int, ...], rows: tuple[float, float], cols: tuple[float, float],
           thickness: float) -> np.ndarray:
    """(k, D) labels positions of the corners of the image box rows x cols on the plane (with its thickness
    along the leading axes)."""
    lead = list(plane_index)
    corners = np.array([lead + [r, c] for r in rows for c in cols], dtype=float)
    if lead:
        corners = np.concatenate([corners + offset for offset in (-thickness, thickness)])
    return apply(matrix, corners)


def plane_coverage(mask: np.ndarray, plane_index: tuple[int, ...], matrix: np.ndarray | None,
                   labels_shape: tuple[int, ...], offset: tuple[int, int] = (0, 0)
                   ) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Labels-data indices covered by ``mask`` ((h, w) bool on the image plane at ``plane_index``, its top-left
    pixel at image pixel ``offset``), with the mask pixel each one takes its value from.

    On the image's own grid these are the mask's pixels (outside the labels array included: the caller
    checks). On another grid, the labels pixels whose centres fall inside a mask pixel, within the labels array.

    Returns:
        ``(indices, rows, cols)``: a tuple of D int arrays, and the (row, col) pixel of ``mask`` of each index.
    """
    rows, cols = np.nonzero(mask)
    row0, col0 = (int(v) for v in offset)
    if matrix is None:
        lead = tuple(np.full(rows.shape, value, dtype=np.intp) for value in plane_index)
        return lead + (rows + row0, cols + col0), rows, cols
    empty = np.zeros(0, dtype=np.intp)
    if rows.size == 0:
        return tuple(empty for _ in labels_shape), empty, empty
    reach = _reach(matrix, plane_index, (rows.min() + row0 - 0.5, rows.max() + row0 + 0.5),
                   (cols.min() + col0 - 0.5, cols.max() + col0 + 0.5), 0.5)
    low = np.clip(np.floor(reach.min(axis=0)).astype(int), 0, None)
    high = np.minimum(np.ceil(reach.max(axis=0)).astype(int) + 1, labels_shape)
    if (high <= low).any():
        return tuple(empty for _ in labels_shape), empty, empty
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high)], indexing="ij"), axis=-1)
    candidates = grid.reshape(-1, len(labels_shape))
    back = np.rint(apply(np.linalg.inv(matrix), candidates)).astype(np.intp)
    back[:, -2] -= row0
    back[:, -1] -= col0
    lead = len(plane_index)
    on_plane = (back[:, :lead] == np.asarray(plane_index, dtype=np.intp)).all(axis=1)
    inside = on_plane & (back[:, -2] >= 0) & (back[:, -2] < mask.shape[0]) & (back[:, -1] >= 0) & (
        back[:, -1] < mask.shape[1])
    hit = np.zeros(len(candidates), dtype=bool)
    hit[inside] = mask[back[inside, -2], back[inside, -1]]
    return tuple(candidates[hit].T), back[hit, -2], back[hit, -1]


def plane_indices(mask: np.ndarray, plane_index: tuple[int, ...], matrix: np.ndarray | None,
                  labels_shape: tuple[int, ...], offset: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, ...]:
    """The labels-data indices of :func:`plane_coverage` (a tuple of D int arrays)."""
    return plane_coverage(mask, plane_index, matrix, labels_shape, offset)[0]


def outside_labels(mask: np.ndarray, plane_index: tuple[int, ...], matrix: np.ndarray | None,
                   labels_shape: tuple[int, ...], offset: tuple[int, int] = (0, 0)) -> bool:
    """Whether part of ``mask`` (its pixel centres; its top-left pixel at image pixel ``offset``) lies outside the
    labels array, where it cannot be stored."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return False
    rows, cols = rows + int(offset[0]), cols + int(offset[1])
    if matrix is None:
        position = np.array(list(plane_index) + [rows.max(), cols.max()])
        return bool((position >= np.asarray(labels_shape)).any())
    corners = _reach(matrix, plane_index, (rows.min(), rows.max()), (cols.min(), cols.max()), 0.0)
    return bool(((corners < -0.5) | (corners > np.asarray(labels_shape) - 0.5)).any())


def _plane_positions(labels_layer, image_layer, plane_index: tuple[int, ...], region: tuple[int, int, int, int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(positions (n, D) of the labels' data under each pixel of ``region`` of the image plane, row by row;
    inside (n,) bool: whether each lies in the labels array)."""
    row0, col0, row1, col1 = region
    rows, cols = np.mgrid[row0:row1, col0:col1]
    lead = np.broadcast_to(np.asarray(plane_index, dtype=float), (rows.size, len(plane_index)))
    matrix = grid_matrix(labels_layer, image_layer)
    spots = np.column_stack([lead, rows.ravel(), cols.ravel()])
    positions = np.rint(spots if matrix is None else apply(matrix, spots)).astype(np.intp)
    return positions, ((positions >= 0) & (positions < np.asarray(labels_layer.data.shape))).all(axis=1)


def labels_on_plane(labels_layer, image_layer, plane_index: tuple[int, ...], plane_shape: tuple[int, int],
                    region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The labels under the image plane at ``plane_index``, one value per image pixel.

    Args:
        plane_shape: (H, W) of the image plane.
        region: (row0, col0, row1, col1), end-exclusive, to read only part of the plane; None: all of it.

    Returns:
        (rows, cols) array of the labels' dtype; 0 where the labels layer does not reach.
    """
    row0, col0, row1, col1 = region or (0, 0, *plane_shape)
    data = labels_layer.data
    if grid_matrix(labels_layer, image_layer) is None:
        out = np.zeros((row1 - row0, col1 - col0), dtype=data.dtype)
        height = max(0, min(row1, data.shape[-2]) - row0)
        width = max(0, min(col1, data.shape[-1]) - col0)
        if all(0 <= i < n for i, n in zip(plane_index, data.shape)) and height and width:
            out[:height, :width] = np.asarray(data[tuple(plane_index) + (slice(row0, row0 + height),
                                                                        slice(col0, col0 + width))])
        return out
    positions, inside = _plane_positions(labels_layer, image_layer, plane_index, (row0, col0, row1, col1))
    values = np.zeros(len(positions), dtype=data.dtype)
    if inside.any():
        hit = positions[inside]
        low, high = hit.min(axis=0), hit.max(axis=0) + 1
        block = np.asarray(data[tuple(slice(a, b) for a, b in zip(low, high))])
        values[inside] = block[tuple((hit - low).T)]
    return values.reshape(row1 - row0, col1 - col0)


def erase_plane(labels_layer, image_layer, plane_index: tuple[int, ...], plane_shape: tuple[int, int]) -> bool:
    """Set to 0 the labels under the image plane at ``plane_index`` (prompt strokes, not committed objects: no
    undo step); returns whether anything was erased."""
    plane = labels_on_plane(labels_layer, image_layer, plane_index, plane_shape)
    if not plane.any():
        return False
    rows, cols = np.nonzero(plane)
    positions, inside = _plane_positions(labels_layer, image_layer, plane_index, (0, 0, *plane_shape))
    flat = rows * plane_shape[1] + cols
    hit = positions[flat[inside[flat]]]
    low, high = hit.min(axis=0), hit.max(axis=0) + 1
    window = tuple(slice(a, b) for a, b in zip(low, high))
    block = np.array(labels_layer.data[window])  # read, erase, write back: numpy and zarr alike
    block[tuple((hit - low).T)] = 0
    labels_layer.data[window] = block
    labels_layer.refresh()
    return True


def object_mask(labels_layer, image_layer, plane_index: tuple[int, ...], plane_shape: tuple[int, int],
                object_id: int) -> np.ndarray:
    """(H, W) bool: where object ``object_id`` of the labels layer lies on the image plane at ``plane_index``."""
    return labels_on_plane(labels_layer, image_layer, plane_index, plane_shape) == object_id
