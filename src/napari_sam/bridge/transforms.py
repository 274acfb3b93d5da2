"""World <-> data coordinates between napari layers: scale, translate, rotate, shear and affine, all at once.

Every napari layer maps its data coordinates to world coordinates by an affine transform. :func:`data_to_world`
reads that transform as a homogeneous matrix through napari's public ``Layer.data_to_world``, so it is exactly
napari's own. Positions are in napari's axis order (..., row, col).
"""

from __future__ import annotations

import numpy as np


def data_to_world(layer) -> np.ndarray:
    """The (D+1, D+1) homogeneous matrix mapping ``layer``'s D data axes to its world position.

    Built from ``layer.data_to_world`` of the origin and the unit vectors, which is exact for napari's affine
    transforms (scale, translate, rotate, shear and the ``affine`` property).
    """
    ndim = layer.ndim
    origin = np.asarray(layer.data_to_world(np.zeros(ndim)), dtype=float)
    matrix = np.eye(ndim + 1)
    for axis in range(ndim):
        unit = np.zeros(ndim)
        unit[axis] = 1.0
        matrix[:ndim, axis] = np.asarray(layer.data_to_world(unit), dtype=float) - origin
    matrix[:ndim, ndim] = origin
    return matrix


def window_to_world(layer, index: tuple[int, ...], corner: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The affine matrix that places a window of ``layer``'s plane at ``index`` onto the layer: data of shape
    ``(1,) * len(index) + (H, W)`` whose pixel (0, 0) is the plane's pixel ``corner`` (row, col) shows where those
    pixels of ``layer`` are (a preview of a tile or of a whole plane, over the image it was made from)."""
    shift = np.eye(len(index) + 3)
    shift[:-1, -1] = [*index, *corner]
    return data_to_world(layer) @ shift


def apply(matrix: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Apply a homogeneous (T+1, S+1) matrix to (n, S) positions, giving (n, T)."""
    positions = np.asarray(positions, dtype=float).reshape(-1, matrix.shape[1] - 1)
    return positions @ matrix[:-1, :-1].T + matrix[:-1, -1]


def layer_to_layer(source, target) -> np.ndarray:
    """Homogeneous matrix from ``source``'s data coordinates to ``target``'s, through world coordinates.

    Layers of different dimensionality share their last axes (napari aligns world axes from the right). A
    source of fewer axes than the target has the missing leading axes set to 0 (use :func:`to_target_data`
    to place them at the viewer's position); extra leading source axes are dropped.
    """
    source_matrix, target_matrix = data_to_world(source), data_to_world(target)
    s, t = source.ndim, target.ndim
    if s == t:
        return np.linalg.inv(target_matrix) @ source_matrix
    shared = min(s, t)
    # the world transform of the shared (last) axes of each layer
    source_shared = _last_axes(source_matrix, shared)
    target_shared = _last_axes(target_matrix, shared)
    within = np.linalg.inv(target_shared) @ source_shared  # shared source axes -> shared target axes
    full = np.zeros((t + 1, s + 1))
    full[t, s] = 1.0
    full[t - shared: t, s - shared: s] = within[:shared, :shared]
    full[t - shared: t, s] = within[:shared, shared]
    return full


def _last_axes(matrix: np.ndarray, count: int) -> np.ndarray:
    """The sub-transform of the last ``count`` axes (assumes they do not mix with the leading ones)."""
    ndim = matrix.shape[0] - 1
    part = np.eye(count + 1)
    part[:count, :count] = matrix[ndim - count: ndim, ndim - count: ndim]
    part[:count, count] = matrix[ndim - count: ndim, ndim]
    return part


def to_target_data(source, target, positions: np.ndarray, world_point=None) -> np.ndarray:
    """Positions in ``source``'s data coordinates, as (n, target.ndim) positions in ``target``'s data coordinates.

    When ``source`` has fewer axes than ``target``, the missing leading target axes are taken from
    ``world_point`` (the viewer's ``dims.point``) mapped into ``target``'s data, or 0 without it.
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, source.ndim)
    mapped = apply(layer_to_layer(source, target), positions)
    missing = target.ndim - source.ndim
    if missing > 0 and world_point is not None and len(positions):
        leading = np.asarray(target.world_to_data(np.asarray(world_point, dtype=float)), dtype=float)
        mapped[:, :missing] = leading[:missing]
    return mapped
