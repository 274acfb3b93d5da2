"""Propagate: extend the previewed object through the stack, as one undoable object of the Labels layer.

Mixed into the segment widget. The object previewed on the shown plane is propagated along the last
non-displayed axis (z of a (t, z, y, x) image, t of a (t, y, x) one) on a worker thread with a progress bar and
a Cancel button; a cancelled or failed run writes nothing. It uses the prompt model (any SAM-1 checkpoint:
each slice prompted from the previous one), or a SAM2-family video checkpoint chosen in "propagate with" (loaded
on first use; the previewed mask is its prompt on the shown plane).

Correcting: go to a plane where the propagated object is wrong, prompt it again there (its preview should cover
mostly that object) and propagate again. With "re-propagate into the object under the prompts" ticked, the
object keeps its id: it is replaced from that plane on, away from the plane it was first propagated from (both
ways when that plane is unknown), in one undo step.
"""

from __future__ import annotations

import threading

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info

from ..bridge.labels_writer import commit_object, object_under, replace_object
from ..core.model_loading import resolve_device
from ..core.propagation import propagate
from ..core.video_propagation import VIDEO_CHECKPOINTS, load_video_model, propagate_video
from .prompt_layers import add_labels_layer


#: The "propagate with" choice that uses the prompt model itself.
PROMPT_MODEL = "the prompt model (SAM)"


class PropagationControls:
    """The Propagate button, its options and its worker (for a widget with image, labels and preview)."""

    def _add_propagation_controls(self) -> None:
        self.video_model_picker = ComboBox(
            label="propagate with", choices=[PROMPT_MODEL, *VIDEO_CHECKPOINTS], value=PROMPT_MODEL,
            tooltip="The prompt model prompts each slice from the previous one. A SAM2-family video checkpoint "
                    "(choose or type a hub id or folder) tracks the object with its memory of the slices seen.")
        self.video_model_picker.native.setEditable(True)
        self.use_mask_input = CheckBox(
            text="prompt with the previous slice's mask", value=False,
            tooltip="Also pass each slice's low-res logits to the next (helps checkpoints trained with mask "
                    "prompts, such as Meta's SAM; the bundled tiny-cells model was not).")
        self.correct_object = CheckBox(
            text="re-propagate into the object under the prompts", value=True,
            tooltip="When the previewed mask lies mostly on an existing object, propagating replaces that object "
                    "from this plane on (away from where it was first propagated) instead of adding a new one.")
        self.stop_score = FloatSpinBox(
            label="stop below score", value=0.6, min=0.0, max=1.0, step=0.05,
            tooltip="Stop in a direction at the first slice whose score is below this: the predicted IoU (prompt "
                    "model) or the object score (SAM2 video checkpoints).")
        self.stop_overlap = FloatSpinBox(
            label="stop below overlap", value=0.3, min=0.0, max=1.0, step=0.05,
            tooltip="Prompt model: stop at the first slice whose mask overlaps the previous slice's less than "
                    "this (IoU): the object changed too much, or the prompt jumped to a neighbour.")
        self.stop_area = SpinBox(
            label="stop below area (px)", value=10, min=0, max=1 << 30,
            tooltip="Stop at the first slice whose mask has fewer pixels: the object has ended.")
        self.propagate_button = PushButton(text="Propagate through the stack (P)")
        self.cancel_propagation_button = PushButton(text="Cancel propagation", enabled=False)
        self.extend([self.video_model_picker, self.use_mask_input, self.stop_score, self.stop_overlap,
                     self.stop_area, self.correct_object, self.propagate_button, self.cancel_propagation_button])
        self.propagate_button.changed.connect(self.propagate)
        self.cancel_propagation_button.changed.connect(lambda: self._stop_propagation.set())
        self._stop_propagation = threading.Event()
        self.propagated_id = None
        self._propagation_anchors: dict[int, int] = {}  # object id -> the plane it was first propagated from
        self._video_model = None  # (name, device, model, geometry) once a video checkpoint was loaded

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
        target, directions = self._correction_target(image, index, axis, first)

        limits, video_name = tuple(image.contrast_limits), self.video_model_picker.native.currentText().strip()
        options = dict(contrast_limits=limits, rgb=image.rgb, directions=directions,
                       score_threshold=self.stop_score.value, min_area=self.stop_area.value,
                       cancel=self._stop_propagation.is_set)
        overlap, mask_input = self.stop_overlap.value, self.use_mask_input.value

        def work(report):
            if not video_name or video_name == PROMPT_MODEL:
                return propagate(predictor, volume, index[axis], 0, first, use_mask_input=mask_input,
                                 iou_threshold=overlap, progress=report, **options)
            model, geometry = self._load_video_model(video_name, predictor.device)
            return propagate_video(model, volume, index[axis], 0, mask=first, geometry=geometry, progress=report,
                                   **options)

        self.run_cancellable(
            work, "Propagation", lambda result: self._commit_propagation(image, index, axis, result, target,
                                                                        directions),
            self.propagate_button, self.cancel_propagation_button, self._stop_propagation)

    def _load_video_model(self, name: str, device):
        """(model, geometry) of the video checkpoint ``name`` on ``device``, loaded once (on the worker)."""
        device = resolve_device(device)
        if self._video_model is None or self._video_model[:2] != (name, device):
            model, geometry, _ = load_video_model(name, device=device)
            self._video_model = (name, device, model, geometry)
        return self._video_model[2:]

    def _correction_target(self, image, index, axis, mask) -> tuple[int | None, tuple[int, ...]]:
        """(the object id to re-propagate into or None for a new object, the directions to propagate)."""
        labels = self.labels_picker.value
        if labels is None or not self.correct_object.value:
            return None, (-1, 1)
        plane, target = index[axis], None
        n_planes = (image.data[0] if image.multiscale else image.data).shape[axis]
        try:  # this plane, else a neighbouring one (the object stopped just short of this plane)
            for other in (plane, plane - 1, plane + 1):
                if target is None and 0 <= other < n_planes:
                    target = object_under(labels, image, index[:axis] + (other,), mask)
        except ValueError:
            return None, (-1, 1)
        if target is None:
            return None, (-1, 1)
        anchor = self._propagation_anchors.get(target)
        directions = (-1, 1) if anchor is None or anchor == plane else ((1,) if plane > anchor else (-1,))
        return target, directions

    def _commit_propagation(self, image, index, axis, result, target=None, directions=(-1, 1)) -> None:
        if self._closed:
            return
        labels = self.labels_picker.value
        if labels is None:
            labels = add_labels_layer(self.viewer, image)
            self.labels_picker.reset_choices()
            self.labels_picker.value = labels
        planes = [(index[:axis] + (z,), result.masks[z]) for z in range(result.start, result.stop + 1)]
        try:
            if target is None:
                self.propagated_id = commit_object(labels, image, planes, self.overwrite.value)
                if self.propagated_id is not None:
                    self._propagation_anchors[self.propagated_id] = index[axis]
            else:
                plane, n_planes = index[axis], len(result.masks)
                cleared = [z for z in range(n_planes) if (z >= plane and 1 in directions)
                           or (z <= plane and -1 in directions)]
                replace_object(labels, image, target, planes, [index[:axis] + (z,) for z in cleared],
                               self.overwrite.value)
                self.propagated_id = target
        except (ValueError, IndexError) as error:
            show_error(f"Could not write into {labels.name!r}: {error}")
            return
        if target is None:
            self._show(f"Object {self.propagated_id} spans planes {result.start}..{result.stop}.")
        else:
            self._show(f"Object {target} re-propagated from plane {index[axis]}: planes {result.start}..{result.stop} "
                       "rewritten.")
        self.clear_prompts()
