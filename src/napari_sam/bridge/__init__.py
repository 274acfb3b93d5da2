"""Between napari layers and the core: slices, transforms, labels writes."""
