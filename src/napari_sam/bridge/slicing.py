"""The 2D plane of an image layer that the viewer currently shows."""

from __future__ import annotations

import numpy as np


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
    spatial_ndim = layer.ndim
    leading = spatial_ndim - 2
    if leading <= 0:
        return np.asarray(data), ()
    world = np.asarray(dims_point, dtype=float)[-spatial_ndim:]
    data_position = np.asarray(layer.world_to_data(world), dtype=float)
    shape = data.shape[:leading]
    index = tuple(int(np.clip(np.round(data_position[axis]), 0, shape[axis] - 1)) for axis in range(leading))
    return np.asarray(data[index]), index
