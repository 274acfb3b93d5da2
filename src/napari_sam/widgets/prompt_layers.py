"""Creating and styling the layers the segment widget works with.

Every created layer takes the image's transforms (scale, translate, rotate, shear, affine) and spatial
dimensionality, so that its data pixels line up with the image's. Names are only defaults: the widget finds
its layers through its pickers, never by name.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_info

from ..bridge.layer_prompts import BRUSH_NEGATIVE, BRUSH_POSITIVE, shape_flags
from ..bridge.slicing import full_resolution

POSITIVE_COLOUR = (0.0, 0.85, 0.2, 1.0)
NEGATIVE_COLOUR = (0.95, 0.1, 0.1, 1.0)
#: Every previewed mask is drawn in magenta: far from every colour napari gives committed labels (at least 0.36
#: apart in RGB over the first 1000 ids) and from the green and red points.
PREVIEW_COLOUR = (1.0, 0.0, 1.0, 1.0)
#: Labels arrays larger than this many bytes are created as zarr arrays on disk.
LARGE_LABELS_BYTES = 512 << 20


def unwrapped(layer):
    """The layer itself: napari hands plugins a proxy of the viewer, whose ``add_*`` return proxies of the new
    layers, and a proxy is not ``is``-identical to the layer in ``viewer.layers``."""
    return getattr(layer, "__wrapped__", layer)


def image_transforms(image_layer) -> dict:
    """Keyword arguments that give a new layer the image's data-to-world transform."""
    return {
        "scale": image_layer.scale,
        "translate": image_layer.translate,
        "rotate": image_layer.rotate,
        "shear": image_layer.shear,
        "affine": image_layer.affine.affine_matrix,
    }


def spatial_shape(image_layer) -> tuple[int, ...]:
    """The image layer's data shape without the colour axis (RGB layers), at full resolution."""
    data = full_resolution(image_layer)
    return tuple(data.shape[:-1]) if image_layer.rgb else tuple(data.shape)


def add_points_layer(viewer, image_layer, name: str = "SAM points"):
    """A Points layer for positive/negative clicks, in 'add' mode, with a boolean ``positive`` feature."""
    layer = viewer.add_points(np.zeros((0, image_layer.ndim)), ndim=image_layer.ndim, name=name,
                              features={"positive": np.zeros(0, dtype=bool)}, size=8, border_width=0.15,
                              border_color="white", **image_transforms(image_layer))
    layer.feature_defaults["positive"] = True
    layer.mode = "add"
    return unwrapped(layer)


def colour_points(points_layer) -> None:
    """Colour each point by its ``positive`` feature: green positive, red negative."""
    if len(points_layer.data) == 0 or "positive" not in points_layer.features:
        return
    positive = np.asarray(points_layer.features["positive"], dtype=bool)
    colours = np.where(positive[:, None], POSITIVE_COLOUR, NEGATIVE_COLOUR)
    if not np.array_equal(np.asarray(points_layer.face_color), colours):
        points_layer.face_color = colours


def add_shapes_layer(viewer, image_layer, name: str = "SAM boxes"):
    """A Shapes layer for box (rectangle), polygon, ellipse and lasso prompts and for scribbles (paths), ready to
    draw rectangles, with a boolean ``positive`` feature (scribbles: positive or negative)."""
    layer = viewer.add_shapes(ndim=image_layer.ndim, name=name, edge_color="yellow", edge_width=2,
                              face_color="transparent", features={"positive": np.zeros(0, dtype=bool)},
                              **image_transforms(image_layer))
    layer.feature_defaults["positive"] = True
    layer.mode = "add_rectangle"
    return unwrapped(layer)


def shape_polarity(shapes_layer) -> np.ndarray:
    """(n,) bool: each shape's ``positive`` feature, True where missing; the layer's features are made to hold it."""
    features, values = shapes_layer.features, shape_flags(shapes_layer)
    if "positive" not in features or len(features) != len(values):
        shapes_layer.features = pd.DataFrame({"positive": values})
    return values


def colour_shapes(shapes_layer) -> None:
    """Colour each shape's edge by its ``positive`` feature: green positive, red negative."""
    values = shape_polarity(shapes_layer)
    if len(values):
        colours = np.where(values[:, None], POSITIVE_COLOUR, NEGATIVE_COLOUR)
        if not np.array_equal(np.asarray(shapes_layer.edge_color), colours):
            shapes_layer.edge_color = colours


def flip_selected_shapes(shapes_layer) -> bool:
    """Turn the selected shapes from positive to negative and back; whether any was selected."""
    if not shapes_layer.selected_data:
        return False
    values = shape_polarity(shapes_layer).copy()
    for index in shapes_layer.selected_data:
        values[index] = not values[index]
    shapes_layer.features = pd.DataFrame({"positive": values})
    colour_shapes(shapes_layer)
    return True


def labels_array(shape: tuple[int, ...], name: str, dtype=np.uint32):
    """An empty labels array of ``shape`` and ``dtype``: in memory, or for more than :data:`LARGE_LABELS_BYTES` a
    zarr array on disk in the user's data folder (named after ``name``). Returns ``(array, its folder or None)``."""
    dtype = np.dtype(dtype)
    if np.prod(shape, dtype=np.int64) * dtype.itemsize <= LARGE_LABELS_BYTES:
        return np.zeros(shape, dtype=dtype), None
    import time

    import zarr
    from platformdirs import user_data_dir

    folder = Path(user_data_dir("napari-sam")) / "labels" / f"{_safe(name)}-{time.strftime('%Y%m%d-%H%M%S')}.zarr"
    chunks = (1,) * (len(shape) - 2) + tuple(min(1024, side) for side in shape[-2:])
    return zarr.create_array(folder, shape=shape, chunks=chunks, dtype=dtype.name, fill_value=0), folder


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "labels"


def add_labels_layer(viewer, image_layer, name: str = "SAM labels"):
    """An empty uint32 Labels layer over the whole image (every slice), with the image's transforms; zarr-backed on
    disk for images too large for memory (a notification says where)."""
    data, folder = labels_array(spatial_shape(image_layer), f"{image_layer.name} {name}")
    if folder is not None:
        show_info(f"The labels of {image_layer.name!r} are too large for memory: they are kept on disk in {folder}.")
    return unwrapped(viewer.add_labels(data, name=name, **image_transforms(image_layer)))


def add_brush_layer(viewer, image_layer, name: str = "SAM scribbles"):
    """A uint8 Labels layer over the whole image for brush scribbles, with the image's transforms, in paint mode:
    label 1 (green) marks the object, label 2 (red) the background."""
    data, _ = labels_array(spatial_shape(image_layer), f"{image_layer.name} {name}", np.uint8)
    colours = DirectLabelColormap(color_dict={None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0),
                                              BRUSH_POSITIVE: POSITIVE_COLOUR, BRUSH_NEGATIVE: NEGATIVE_COLOUR})
    layer = unwrapped(viewer.add_labels(data, name=name, opacity=0.8, colormap=colours,
                                        **image_transforms(image_layer)))
    layer.brush_size = 5
    layer.selected_label = BRUSH_POSITIVE
    layer.mode = "paint"
    return layer


def add_preview_layer(viewer, data: np.ndarray, affine: np.ndarray, name: str = "SAM preview"):
    """A Labels layer that shows previewed masks: ``data`` (uint8, the window of one plane, leading axes of size 1)
    placed by the homogeneous ``affine`` (data -> world). It never holds committed results."""
    colours = DirectLabelColormap(color_dict={None: PREVIEW_COLOUR, 0: (0.0, 0.0, 0.0, 0.0)})
    layer = viewer.add_labels(data, name=name, opacity=0.5, colormap=colours, affine=affine)
    layer.editable = False
    return unwrapped(layer)


@contextmanager
def selection_kept(viewer):
    """Give the active layer (and its mode) back after the block: napari selects every layer it adds."""
    active = viewer.layers.selection.active
    mode = getattr(active, "mode", None)
    try:
        yield
    finally:
        if active is not None and active in viewer.layers:
            viewer.layers.selection.active = active
            if mode is not None and active.mode != mode:
                active.mode = mode
