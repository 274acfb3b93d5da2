"""Qt dock widgets of napari-sam."""

from .model_widget import ModelWidget

__all__ = ["ModelWidget"]
