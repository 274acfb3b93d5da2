"""Propagate: extend the previewed object through the stack, as one undoable object of the Labels layer.

Mixed into the segment widget. The object previewed on the shown plane is propagated along the last
non-displayed axis (z of a (t, z, y, x) image, t of a (t, y, x) one) on a worker thread with a progress bar and
a Cancel button; a cancelled or failed run writes nothing.
"""

from __future__ import annotations

import threading

import numpy as np
from magicgui.widgets import CheckBox, PushButton
from napari.utils.notifications import show_error, show_info

from ..bridge.labels_writer import commit_object
from ..core.propagation import propagate
from .prompt_layers import add_labels_layer


class PropagationControls:
    """The Propagate button, its options and its worker (for a widget with image, labels and preview)."""

    def _add_propagation_controls(self) -> None:
        self.use_mask_input = CheckBox(
            text="prompt with the previous slice's mask", value=False,
            tooltip="Also pass each slice's low-res logits to the next (helps checkpoints trained with mask "
                    "prompts, such as Meta's SAM; the bundled tiny-cells model was not).")
        self.propagate_button = PushButton(text="Propagate through the stack (P)")
        self.cancel_propagation_button = PushButton(text="Cancel propagation", enabled=False)
        self.extend([self.use_mask_input, self.propagate_button, self.cancel_propagation_button])
        self.propagate_button.changed.connect(self.propagate)
        self.cancel_propagation_button.changed.connect(lambda: self._stop_propagation.set())
        self._stop_propagation = threading.Event()
        self.propagated_id = None

    def propagate(self) -> None:
        """Propagate the single previewed object along the stack axis and commit it under one id."""
        image, predictor, preview = self.image_picker.value, self.predictor, self.preview
        if image is None or predictor is None or preview is None or not preview.index:
            show_info("Propagate needs a stack and one previewed object on the shown plane.")
            return
        if len(preview.masks) != 1 or self.shown_request != self.predict_request:
            show_info("Propagate one object at a time: keep one object's prompts on the plane.")
            return
        axis = len(preview.index) - 1
        data = image.data[0] if image.multiscale else image.data
        selection = tuple(slice(None) if a == axis else i for a, i in enumerate(preview.index))
        volume = np.asarray(data[selection])
        index, first = preview.index, self.shown_masks()[0]

        def work(report):
            return propagate(predictor, volume, index[axis], 0, first, contrast_limits=tuple(image.contrast_limits),
                             rgb=image.rgb, use_mask_input=self.use_mask_input.value, progress=report,
                             cancel=self._stop_propagation.is_set)

        self.run_cancellable(work, "Propagation", lambda result: self._commit_propagation(image, index, axis, result),
                             self.propagate_button, self.cancel_propagation_button, self._stop_propagation)

    def _commit_propagation(self, image, index, axis, result) -> None:
        if self._closed:
            return
        labels = self.labels_picker.value
        if labels is None:
            labels = add_labels_layer(self.viewer, image)
            self.labels_picker.reset_choices()
            self.labels_picker.value = labels
        planes = [(index[:axis] + (z,), result.masks[z]) for z in range(result.start, result.stop + 1)]
        try:
            self.propagated_id = commit_object(labels, image, planes, self.overwrite.value)
        except (ValueError, IndexError) as error:
            show_error(f"Could not write into {labels.name!r}: {error}")
            return
        self._show(f"Object {self.propagated_id} spans planes {result.start}..{result.stop}.")
        self.clear_prompts()
