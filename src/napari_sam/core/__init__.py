"""The Qt-free, napari-free core: model loading, image preparation, prediction."""
