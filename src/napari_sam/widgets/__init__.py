"""Qt dock widgets of napari-sam."""

from .model_widget import ModelWidget
from .segment_widget import SegmentWidget

__all__ = ["ModelWidget", "SegmentWidget"]
