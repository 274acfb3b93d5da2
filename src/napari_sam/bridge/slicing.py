"""The 2D planes of an image layer: which one the viewer shows, and reading one plane without the others.

A layer's leading axes are those before its last two spatial axes (and before the colour axis of RGB layers).
Multiscale layers are read at level 0, the full resolution. Lazy data (dask, zarr) is read one plane at a time.
"""

from __future__ import annotations

import numpy as np

from ..core.image import plane_of


def full_resolution(layer):
    """The layer's data at full resolution (level 0 of a multiscale layer), not loaded."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def leading_shape(layer) -> tuple[int, ...]:
    """The sizes of the layer's leading (non-plane) axes: () for a 2D image, (z,) for a z-stack, (t, z) ..."""
    return tuple(full_resolution(layer).shape[: layer.ndim - 2])


def plane_shape(layer) -> tuple[int, int]:
    """(H, W) of one plane of the layer."""
    shape = full_resolution(layer).shape
    return (int(shape[-3]), int(shape[-2])) if layer.rgb else (int(shape[-2]), int(shape[-1]))


def current_index(layer, dims_point) -> tuple[int, ...]:
    """The integer data index of ``layer``'s non-displayed leading axes at the viewer's position, without
    reading any data (() for 2D layers)."""
    leading = leading_shape(layer)
    if not leading:
        return ()
    world = np.asarray(dims_point, dtype=float)[-layer.ndim:]
    position = np.asarray(layer.world_to_data(world), dtype=float)
    return tuple(int(np.clip(np.round(position[axis]), 0, size - 1)) for axis, size in enumerate(leading))


def planes_to_run(layer, dims_point, every_plane: bool) -> list[tuple[int, ...]]:
    """The index of the shown plane, or of every plane of the layer when ``every_plane`` (and it has leading
    axes)."""
    index = current_index(layer, dims_point)
    return list(np.ndindex(*leading_shape(layer))) if every_plane and index else [index]


def visible_region(layer, margin: float = 0.25) -> tuple[int, int, int, int] | None:
    """(row0, col0, row1, col1) of the layer's plane that the canvas shows, at full resolution (level 0 of a
    multiscale layer), grown by ``margin`` of its size on every side and clipped to the plane; None when the layer
    is not drawn (no canvas yet)."""
    corners = np.asarray(layer.corner_pixels, dtype=float)
    if corners.ndim != 2 or corners.shape[0] != 2 or corners.shape[1] < 2:
        return None
    if getattr(layer, "multiscale", False):
        corners = corners * np.asarray(layer.downsample_factors[layer.data_level], dtype=float)[-corners.shape[1]:]
    (row0, col0), (row1, col1) = corners[:, -2:]
    if row1 <= row0 or col1 <= col0:
        return None
    grow_rows, grow_cols = margin * (row1 - row0), margin * (col1 - col0)
    height, width = plane_shape(layer)
    return (int(max(0, row0 - grow_rows)), int(max(0, col0 - grow_cols)),
            int(min(height, np.ceil(row1 + 1 + grow_rows))), int(min(width, np.ceil(col1 + 1 + grow_cols))))


def read_plane(layer, index: tuple[int, ...]) -> np.ndarray:
    """The plane at ``index`` of the leading axes, as a numpy array (H, W) or (H, W, C); only it is read."""
    data = full_resolution(layer)
    return np.asarray(data[tuple(index)] if index else data)


def plane_view(layer, index: tuple[int, ...]):
    """The plane at ``index`` of the layer (level 0), read only where it is indexed (see
    :func:`~napari_sam.core.image.source.plane_of`)."""
    return plane_of(full_resolution(layer), index)


class StackAxis:
    """One axis of a layer's data seen as a sequence of planes (z of a z-stack, t of a time-lapse), read lazily.

    ``StackAxis(layer, index, axis)[k]`` is the plane at ``index`` with its leading axis ``axis`` set to ``k``.
    It has ``shape`` ((n_planes, H, W[, C])), ``ndim`` and ``dtype`` like an array, so the core's propagation can
    take it as a volume along axis 0 and read one plane at a time.
    """

    def __init__(self, layer, index: tuple[int, ...], axis: int):
        self.layer, self.index, self.axis = layer, tuple(index), axis
        data = full_resolution(layer)
        self.shape = (int(data.shape[axis]), *data.shape[len(index):])
        self.ndim = len(self.shape)
        self.dtype = np.dtype(data.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        else:
            rest = ()
        if not isinstance(key, (int, np.integer)):
            raise TypeError("StackAxis reads one plane at a time: index it with an integer.")
        index = list(self.index)
        index[self.axis] = int(key)
        plane = read_plane(self.layer, tuple(index))
        return plane[rest] if rest else plane
