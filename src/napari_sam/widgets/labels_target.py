"""Where prompt mode, propagation and refinement write: the chosen Labels layer (created on first use), and how
a write that cannot be done is reported."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, create_widget
from napari.layers import Labels
from napari.utils.notifications import Notification, NotificationSeverity, notification_manager, show_error

from ..bridge.labels_writer import widened
from ..core.errors import LabelsFullError
from .layout import narrow
from .prompt_layers import add_labels_layer, selection_kept


class LabelsTarget:
    """The labels picker and the overwrite option; creates the layer when none is chosen.

    Args:
        viewer: the napari viewer.
        excluded: a function returning layers the picker must not offer (the preview layer).
    """

    def __init__(self, viewer, excluded):
        self.viewer, self.excluded = viewer, excluded
        self.picker = create_widget(annotation=Labels, label="labels",
                                    options={"nullable": True, "choices": self._choices})
        narrow(self.picker)
        self.overwrite = CheckBox(text="overwrite labels", value=False,
                                  tooltip="New objects may replace existing labels; unticked they fill only "
                                          "unlabelled pixels.")

    def _choices(self, widget=None):
        excluded = self.excluded()
        return [layer for layer in self.viewer.layers if isinstance(layer, Labels) and layer not in excluded]

    @property
    def value(self):
        return self.picker.value

    def layer(self, image_layer):
        """The chosen Labels layer, or a new one over ``image_layer`` (the active layer stays active)."""
        if self.picker.value is None or self.picker.value not in self.viewer.layers:
            with selection_kept(self.viewer):
                layer = add_labels_layer(self.viewer, image_layer)
            layers = self.viewer.layers
            if image_layer in layers:  # just above the image: below the preview and the prompts
                layers.move(layers.index(layer), layers.index(image_layer) + 1)
            self.picker.reset_choices()
            self.picker.value = layer
        return self.picker.value

    def write(self, labels_layer, action) -> tuple[bool, object]:
        """``(True, action()'s result)``, or ``(False, None)`` when the write was refused: the user is told why
        and nothing changed. A layer whose dtype is full gets a notification with a button that widens it."""
        try:
            return True, action()
        except LabelsFullError as error:
            notify_full(labels_layer, str(error))
        except (ValueError, IndexError) as error:
            show_error(f"Could not write into {labels_layer.name!r}: {error}")
        return False, None


def notify_full(labels_layer, message: str) -> None:
    """An error notification with a "widen" action: the user agrees to convert the layer to uint32 (which clears
    its undo history) before committing again."""

    def widen() -> None:
        if labels_layer.data.dtype.itemsize < 4 or np.issubdtype(labels_layer.data.dtype, np.signedinteger):
            widened(labels_layer, np.uint32)

    notification_manager.dispatch(Notification(
        message + " Convert it to uint32 (this clears its undo history)?", severity=NotificationSeverity.ERROR,
        actions=[("Convert to uint32", widen)]))
