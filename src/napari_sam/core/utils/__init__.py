"""Helpers of the core, in the style of segment-anything's ``utils``."""
