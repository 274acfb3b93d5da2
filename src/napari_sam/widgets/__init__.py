"""Qt dock widgets of napari-sam: prompt mode ("Segment Anything"), "Segment everything" and the "Image series",
sharing one model session per viewer."""

from .everything_widget import EverythingWidget
from .segment_widget import SegmentWidget
from .series_widget import SeriesWidget, open_series
from .session import ModelSession, session_for

__all__ = ["EverythingWidget", "ModelSession", "SegmentWidget", "SeriesWidget", "open_series", "session_for"]
