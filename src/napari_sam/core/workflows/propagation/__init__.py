"""Carrying objects through a z-stack or time-lapse: the shared driver (order of slices, stop rules, progress, many
objects at once), with SAM prompting each slice from the previous one, or a SAM2-family video model and its memory;
and filling the slices between key slices."""

from .driver import PropagatedObjects, PropagationResult
from .key_slices import interpolate
from .sam import interior_points, propagate, propagate_objects
from .video import propagate_video, propagate_video_objects

__all__ = ["PropagatedObjects", "PropagationResult", "interior_points", "interpolate", "propagate",
           "propagate_objects", "propagate_video", "propagate_video_objects"]
