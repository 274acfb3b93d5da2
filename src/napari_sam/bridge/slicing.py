"""The 2D plane of an image layer that the viewer currently shows."""

from __future__ import annotations

import numpy as np


def current_index(layer, dims_point) -> tuple[int, ...]:
    """The integer data index of ``layer``'s non-displayed leading axes at the viewer's position, without
    reading any data (() for 2D layers)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    leading = layer.ndim - 2
    if leading <= 0:
        return ()
    world = np.asarray(dims_point, dtype=float)[-layer.ndim:]
    position = np.asarray(layer.world_to_data(world), dtype=float)
    return tuple(int(np.clip(np.round(position[axis]), 0, data.shape[axis] - 1)) for axis in range(leading))


def current_plane(layer, dims_point) -> tuple[np.ndarray, tuple[int, ...]]:
    """The displayed 2D plane of an Image layer at the viewer's current position.

    Args:
        layer: a napari ``Image`` layer of any dimensionality (RGB layers keep their colour axis).
        dims_point: the viewer's current world position (``viewer.dims.point``), one value per world axis.

    Returns:
        ``(plane, index)``: the plane as a numpy array of shape (H, W) or (H, W, C), and the integer data index
        of every non-displayed axis (empty for 2D layers). The last two spatial axes are the displayed ones.
    """
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    index = current_index(layer, dims_point)
    return np.asarray(data[index] if index else data), index
