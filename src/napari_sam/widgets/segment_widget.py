"""The "Segment Anything" dock widget: prompts in, live mask preview, undoable commits to a Labels layer.

Clicks in a Points layer (positive or negative) and rectangles, polygons or ellipses in a Shapes layer are
read in world coordinates and mapped into the image's data pixels of the shown plane. Every change re-predicts
on a worker thread; a result that a newer change superseded is dropped. ``C`` commits the previewed objects to
the Labels layer (one undo step), ``Shift+C`` clears the prompts, ``N`` shows the next candidate mask and ``T``
toggles the polarity of new points. Holding Alt while clicking adds a negative point. ``P`` propagates the
previewed object through a stack (see ``propagation_controls``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from magicgui.widgets import CheckBox, PushButton, create_widget
from napari.layers import Labels, Points, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from ..bridge.labels_writer import commit_masks
from ..bridge.layer_prompts import PlanePrompts, read_prompts
from ..bridge.prompt_objects import group_objects, predict_objects
from ..bridge.slicing import current_index, current_plane
from ..bridge.transforms import to_target_data
from .model_widget import ModelWidget
from .propagation_controls import PropagationControls
from .prompt_layers import (
    add_labels_layer,
    add_points_layer,
    add_preview_layer,
    add_shapes_layer,
    colour_points,
)


@dataclass
class Preview:
    """The masks shown for the prompts of one plane.

    Attributes:
        index: the plane's index along the image's leading axes.
        masks: per object, (candidates, H, W) bool, best-scoring first.
        scores: per object, (candidates,) predicted IoU, descending.
        logits: per object, (candidates, m, m) low-res logits.
    """

    index: tuple[int, ...]
    masks: list
    scores: list
    logits: list


class SegmentWidget(PropagationControls, ModelWidget):
    """Model, image and prompt-layer pickers, live preview, commit and clear."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.points_picker = create_widget(annotation=Points, label="points", options={"nullable": True})
        self.shapes_picker = create_widget(annotation=Shapes, label="boxes", options={"nullable": True})
        self.labels_picker = create_widget(annotation=Labels, label="labels",
                                           options={"nullable": True, "choices": self._labels_choices})
        self.overwrite = CheckBox(text="overwrite existing labels", value=False)
        self.commit_button = PushButton(text="Commit (C)")
        self.clear_button = PushButton(text="Clear prompts (Shift+C)")
        for offset, widget in enumerate([self.points_picker, self.shapes_picker, self.labels_picker]):
            self.insert(1 + offset, widget)
        self.extend([self.overwrite, self.commit_button, self.clear_button])
        self._add_propagation_controls()

        self.preview_layer = None
        self.preview: Preview | None = None
        self.candidate = 0  # which candidate (in score order) is shown for single objects
        self.predict_request = 0  # increases with every prompt change
        self.shown_request = 0  # the request whose result is shown
        self._history = None  # (index, points, labels, logits) of the last points-only prediction
        self._watched: list = []
        self._negative_click = False  # the last mouse press on the points layer held Alt

        self.commit_button.changed.connect(self.commit)
        self.clear_button.changed.connect(self.clear_prompts)
        self.image_picker.changed.connect(self._on_image_changed)
        self.points_picker.changed.connect(self._watch_prompt_layers)
        self.shapes_picker.changed.connect(self._watch_prompt_layers)
        napari_viewer.dims.events.current_step.connect(self.update_preview)
        self._watch_prompt_layers()

    def _on_destroyed(self, *args) -> None:
        super()._on_destroyed(*args)
        self.viewer.dims.events.current_step.disconnect(self.update_preview)
        for layer in self._watched:
            layer.events.data.disconnect(self._on_prompt_data)
            if self._note_modifiers in layer.mouse_drag_callbacks:
                layer.mouse_drag_callbacks.remove(self._note_modifiers)

    # --- layers -------------------------------------------------------------------------------------------

    def _labels_choices(self, widget=None):
        return [layer for layer in self.viewer.layers
                if isinstance(layer, Labels) and layer is not self.preview_layer]

    def _refresh_layers(self, event=None) -> None:
        super()._refresh_layers(event)
        for picker in (self.points_picker, self.shapes_picker, self.labels_picker):
            picker.reset_choices()
        if self.preview_layer is not None and self.preview_layer not in self.viewer.layers:
            self.preview_layer, self.preview = None, None

    def model_ready(self) -> None:
        super().model_ready()
        self.ensure_prompt_layers()
        self.update_preview()

    def _on_image_changed(self, event=None) -> None:
        if self.predictor is not None:
            self.ensure_prompt_layers()

    def ensure_prompt_layers(self) -> None:
        """Create the Points and Shapes layers if none is chosen (with the image's transforms)."""
        image = self.image_picker.value
        if image is None:
            return
        if self.points_picker.value is None:
            layer = add_points_layer(self.viewer, image)
            self.points_picker.reset_choices()
            self.points_picker.value = layer
        if self.shapes_picker.value is None:
            layer = add_shapes_layer(self.viewer, image)
            self.shapes_picker.reset_choices()
            self.shapes_picker.value = layer
        self.viewer.layers.selection.active = self.points_picker.value

    def _watch_prompt_layers(self, event=None) -> None:
        """Listen to the chosen prompt layers' edits, and give them the widget's keys."""
        for layer in self._watched:
            layer.events.data.disconnect(self._on_prompt_data)
            if self._note_modifiers in layer.mouse_drag_callbacks:
                layer.mouse_drag_callbacks.remove(self._note_modifiers)
        self._watched = [layer for layer in (self.points_picker.value, self.shapes_picker.value) if layer]
        for layer in self._watched:
            layer.events.data.connect(self._on_prompt_data)
            self._bind_keys(layer)
        if self.points_picker.value is not None:
            self.points_picker.value.mouse_drag_callbacks.insert(0, self._note_modifiers)
        self.update_preview()

    def _bind_keys(self, layer) -> None:
        layer.bind_key("c", lambda _layer: self.commit(), overwrite=True)
        layer.bind_key("Shift-C", lambda _layer: self.clear_prompts(), overwrite=True)
        layer.bind_key("n", lambda _layer: self.next_candidate(), overwrite=True)
        layer.bind_key("p", lambda _layer: self.propagate(), overwrite=True)
        if isinstance(layer, Points):
            layer.bind_key("t", lambda _layer: self.toggle_polarity(), overwrite=True)

    def toggle_polarity(self) -> bool:
        """Switch new points between positive and negative; returns the new polarity (True: positive)."""
        points = self.points_picker.value
        if points is None:
            return True
        defaults = points.feature_defaults
        positive = not (bool(defaults["positive"].iloc[0]) if "positive" in defaults else True)
        points.feature_defaults["positive"] = positive
        self._show(f"New points are {'positive' if positive else 'negative'}.")
        return positive

    def _note_modifiers(self, layer, event) -> None:
        """Mouse press on the points layer: remember whether Alt is held (the point is added on release)."""
        self._negative_click = "Alt" in event.modifiers

    def _on_prompt_data(self, event=None) -> None:
        action = str(getattr(event, "action", "")).split(".")[-1].lower()
        if action in ("adding", "removing", "changing"):
            return  # wait for the finished edit
        points = self.points_picker.value
        if points is not None and event is not None and event.source is points:
            if action == "added" and self._negative_click and "positive" in points.features:
                features = points.features.copy()
                column = features.columns.get_loc("positive")
                for index in getattr(event, "data_indices", ()) or ():
                    features.iloc[index, column] = False  # napari gives added points as -1, -2, ...
                points.features = features
            self._negative_click = False
            if "positive" in points.features:
                colour_points(points)
        self.update_preview()

    # --- preview ------------------------------------------------------------------------------------------

    def _plane_prompts(self):
        image = self.image_picker.value
        plane, index = current_plane(image, self.viewer.dims.point)
        prompts = read_prompts(image, index, plane.shape[:2], self.points_picker.value, self.shapes_picker.value,
                               self.viewer.dims.point)
        return plane, index, prompts

    def update_preview(self, event=None) -> None:
        """Re-predict the shown plane's prompts on a worker; no prompts clear the preview."""
        image, predictor = self.image_picker.value, self.predictor
        if self._closed or image is None or predictor is None:
            return
        try:
            plane, index, prompts = self._plane_prompts()
        except ValueError as error:
            show_error(f"Could not read the prompts: {error}")
            return
        self.predict_request += 1
        request = self.predict_request
        if prompts.empty:
            self._draw(None, request)
            return
        mask_input = self._reusable_logits(index, prompts)
        worker = create_worker(self._predict, request, index, plane, tuple(image.contrast_limits), image.rgb,
                               prompts, mask_input, _start_thread=False,
                               _connect={"returned": self._on_predicted,
                                         "errored": lambda error: self._on_predict_error(error, request)})
        self._start(worker)

    def _reusable_logits(self, index, prompts: PlanePrompts):
        """The last logits, when the new prompt only adds points to the same points-only object."""
        if self._history is None or len(prompts.boxes):
            return None
        old_index, old_points, old_labels, logits = self._history
        n = len(old_points)
        if old_index != index or len(prompts.points) <= n:
            return None
        same = np.allclose(prompts.points[:n], old_points) and np.array_equal(prompts.labels[:n], old_labels)
        return logits if same else None

    def _predict(self, request, index, plane, limits, rgb, prompts: PlanePrompts, mask_input):
        """Worker: embed (usually cached) and predict; returns None for a request already superseded."""
        if request != self.predict_request:
            return None
        with self.predictor.locked():  # no other worker may switch the image between these calls
            self.predictor.set_image(plane, contrast_limits=limits, rgb=rgb)
            return request, index, prompts, predict_objects(self.predictor, group_objects(prompts), mask_input)

    def _on_predict_error(self, error: Exception, request: int) -> None:
        show_error(f"Prediction failed: {error}")
        if request == self.predict_request and not self._closed:
            self._draw(None, request)  # a failed prompt shows no mask

    def _on_predicted(self, result) -> None:
        if result is None or self._closed:
            return
        request, index, prompts, (masks, scores, logits) = result
        if request != self.predict_request:
            return  # superseded by a newer prompt change
        self.candidate = 0
        self._history = None
        if len(prompts.boxes) == 0 and len(masks) == 1:
            self._history = (index, prompts.points.copy(), prompts.labels.copy(), logits[0][0])
        self._draw(Preview(index, masks, scores, logits), request)

    def shown_masks(self) -> np.ndarray:
        """(objects, H, W) bool: the masks the preview shows now."""
        if self.preview is None or not self.preview.masks:
            return np.zeros((0, 0, 0), dtype=bool)
        chosen = [m[self.candidate % len(m)] if len(self.preview.masks) == 1 else m[0] for m in self.preview.masks]
        return np.stack(chosen)

    def _draw(self, preview: Preview | None, request: int) -> None:
        image = self.image_picker.value
        if self.preview_layer is None or self.preview_layer not in self.viewer.layers:
            if preview is None:
                self.preview, self.shown_request = None, request
                return
            self.preview_layer = add_preview_layer(self.viewer, image)
            self.viewer.layers.selection.active = self.points_picker.value or self.shapes_picker.value
        old = self.preview
        self.preview, self.shown_request = preview, request
        data = self.preview_layer.data
        if old is not None and old.index != (preview.index if preview else None):
            data[old.index] = 0
        if preview is not None:
            plane = np.zeros(data.shape[len(preview.index):], dtype=data.dtype)
            for value, mask in enumerate(self.shown_masks(), start=1):
                plane[mask] = value
            data[preview.index] = plane
        elif old is not None:
            data[old.index] = 0
        self.preview_layer.refresh()

    def next_candidate(self) -> None:
        """Show the next of the candidate masks (for a single object)."""
        if self.preview is not None and len(self.preview.masks) == 1:
            self.candidate += 1
            self._draw(self.preview, self.shown_request)

    # --- commit and clear ---------------------------------------------------------------------------------

    def commit(self) -> list[int]:
        """Write the previewed objects into the Labels layer (created if none is chosen); one undo step."""
        image = self.image_picker.value
        if self.preview is None or self.shown_request != self.predict_request or image is None:
            show_info("Nothing to commit yet: add a prompt and wait for its preview.")
            return []
        labels = self.labels_picker.value
        if labels is None:
            labels = add_labels_layer(self.viewer, image)
            self.labels_picker.reset_choices()
            self.labels_picker.value = labels
        try:
            ids = commit_masks(labels, image, self.shown_masks(), self.preview.index, self.overwrite.value)
        except (ValueError, IndexError) as error:
            show_error(f"Could not write into {labels.name!r}: {error}")
            return []
        self._show(f"Committed {len(ids)} object(s): {ids}." if ids else "Nothing new to write (all taken).")
        self.clear_prompts()
        return ids

    def clear_prompts(self) -> None:
        """Remove the prompts on the shown plane and the preview, without committing."""
        image = self.image_picker.value
        if image is None:
            return
        index = current_index(image, self.viewer.dims.point)
        for layer in (self.points_picker.value, self.shapes_picker.value):
            if layer is None or len(layer.data) == 0:
                continue
            vertices = layer.data if isinstance(layer, Points) else [v.mean(axis=0) for v in layer.data]
            positions = to_target_data(layer, image, np.asarray(vertices), self.viewer.dims.point)
            on_plane = np.abs(positions[:, : len(index)] - np.asarray(index)).max(axis=1, initial=0) <= 0.5
            if on_plane.any():
                layer.selected_data = set(np.nonzero(on_plane)[0].tolist())
                layer.remove_selected()
        self._history = None
        self.update_preview()
