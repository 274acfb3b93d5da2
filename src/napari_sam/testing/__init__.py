"""Helpers for tests, benchmarks and the training scripts, not used by napari-sam itself: models with seeded random
weights (:mod:`~napari_sam.testing.random_weights`), synthetic microscopy scenes of many looks with exact labels
(:mod:`~napari_sam.testing.synthetic_microscopy`), held-out synthetic figures of a checkpoint
(:mod:`~napari_sam.testing.held_out`), and real X input into a shown viewer for the screenshots and the click
benchmark (:mod:`~napari_sam.testing.x_input`)."""
