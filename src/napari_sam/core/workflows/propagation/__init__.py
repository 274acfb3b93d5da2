"""Carrying one object through a z-stack or time-lapse: the shared driver (order of slices, stop rules, progress),
with SAM prompting each slice from the previous one, or a SAM2-family video model and its memory."""

from .driver import PropagationResult
from .sam import interior_points, propagate
from .video import propagate_video

__all__ = ["PropagationResult", "interior_points", "propagate", "propagate_video"]
