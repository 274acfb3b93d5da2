"""The exceptions napari-sam raises on purpose, in one place."""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message names it and says what to do."""


class SegmentationCancelled(Exception):
    """A long run (segment everything, propagation, refinement) was cancelled between two steps."""


class LabelsFullError(ValueError):
    """A labels array's dtype cannot hold the new object ids; the message names the dtype and the largest id."""


class EncoderNeeded(RuntimeError):
    """Within ``Predictor.from_memory()``: the call needed an embedding that is not in memory (or the predictor was in
    use by another thread), so it would have had to wait; run it on a worker instead."""
