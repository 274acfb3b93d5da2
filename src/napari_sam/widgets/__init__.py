"""Qt dock widgets of napari-sam: prompt mode ("Segment Anything") and "Segment everything", sharing one model
session per viewer."""

from .everything_widget import EverythingWidget
from .segment_widget import SegmentWidget
from .session import ModelSession, session_for

__all__ = ["EverythingWidget", "ModelSession", "SegmentWidget", "session_for"]
