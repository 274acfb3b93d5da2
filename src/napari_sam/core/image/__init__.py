"""Images as the model sees them: array-likes read region by region (numpy, dask, zarr, files), the frames (whole
image or tiles) each model input covers, and the preparation of their pixels for a checkpoint."""

from .files import IMAGE_SUFFIXES, file_axes, is_rgb, napari_contrast_limits, planes, read_image
from .frames import Frame, Tiling, fitted_scale, tiling_for, whole_frame
from .preparation import (
    check_contrast_limits,
    default_contrast_limits,
    display_rgb,
    image_layout,
    model_input,
    normalised,
    rounded_levels,
)
from .source import ArrayView, ImagePlan, ImageSource, LazyPlane, PlaneWriter, content_signature, open_image, plane_of

__all__ = ["IMAGE_SUFFIXES", "ArrayView", "Frame", "ImagePlan", "ImageSource", "LazyPlane", "PlaneWriter", "Tiling",
           "check_contrast_limits", "content_signature", "default_contrast_limits", "display_rgb", "file_axes",
           "fitted_scale", "image_layout", "is_rgb", "model_input", "napari_contrast_limits", "normalised",
           "open_image", "plane_of", "planes", "read_image", "rounded_levels", "tiling_for", "whole_frame"]
