"""The "Segment Anything" dock: prompts in, live mask preview, undoable commits to a Labels layer.

Clicks in a Points layer (positive or negative), rectangles, polygons, ellipses and scribbles (paths) in a Shapes
layer, and brush strokes in a scribbles Labels layer ("Brush": label 1 the object, 2 the background) are read in
world coordinates and mapped into the image's data pixels of the shown plane. Every change re-predicts on a
worker thread; a result that a newer change superseded is dropped. Keys on the prompt layers: ``C`` commits the
previewed objects to the Labels layer (one undo step), ``Shift+C`` clears the prompts, ``N`` shows the next
candidate mask, ``T`` toggles the polarity of new points, ``P`` propagates the previewed object through a stack,
``R`` refines the object under the mouse (the brush layer keeps napari's ``E`` and ``P``, erase and paint). Alt+click
adds a negative point; Ctrl+click refines the object under it.

The dock is composed of parts, each given what it needs: the model panel (shared session), the labels target,
the preview controller, the propagation panel and the refine panel.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import PushButton, create_widget
from napari.layers import Labels, Points, Shapes
from napari.utils.notifications import show_info

from ..bridge.labels_grid import erase_plane
from ..bridge.labels_writer import commit_masks, replace_object
from ..bridge.layer_prompts import BRUSH_NEGATIVE, BRUSH_POSITIVE
from ..bridge.slicing import current_index, plane_shape
from ..bridge.transforms import to_target_data
from .dock import Dock
from .labels_target import LabelsTarget
from .layout import Fold, column, narrow, row
from .preview import PreviewController
from .prompt_layers import (
    add_brush_layer,
    add_points_layer,
    add_shapes_layer,
    colour_points,
    colour_shapes,
    flip_selected_shapes,
    selection_kept,
)
from .propagation_panel import PropagationPanel
from .refine_panel import RefinePanel

KEYS = {"c": "commit", "Shift-C": "clear_prompts", "n": "next_candidate", "p": "propagate", "r": "refine_under_cursor",
        "e": "mark_end", "k": "fill_between_key_slices"}
#: napari's keys that the brush layer keeps (erase and paint), rather than the dock's.
BRUSH_KEEPS = {"e", "p"}


class SegmentWidget(Dock):
    """Image, model and prompt layers; live preview, commit and clear; propagation and refinement."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        viewer = napari_viewer
        self.points_picker = create_widget(annotation=Points, label="points", options={"nullable": True})
        self.shapes_picker = create_widget(annotation=Shapes, label="boxes", options={"nullable": True})
        self.brush_picker = create_widget(annotation=Labels, label="scribbles",
                                          options={"nullable": True, "choices": self._brush_choices})
        self.brush_picker.value = None
        for picker in (self.points_picker, self.shapes_picker, self.brush_picker):
            narrow(picker)
        self.brush_button = PushButton(text="Brush", tooltip="Paint scribbles: label 1 (green) marks the object, 2 "
                                                             "(red) the background; T switches.")
        self.preview_control = PreviewController(viewer, self.session, self._prompt_layers, self.start_worker,
                                                 lambda: self.refine.settings.controls["use_mask_input"].value)
        self.labels = LabelsTarget(viewer, lambda: [self.preview_control.layer, self.brush_picker.value])
        self.commit_button = PushButton(text="Commit (C)", tooltip="Write the previewed objects into the labels "
                                                                   "layer; one Ctrl+Z undoes it.")
        self.clear_button = PushButton(text="Clear (⇧C)", tooltip="Remove the prompts of the shown plane.")
        self.layers_fold = Fold("Layers", column(self.points_picker, self.shapes_picker,
                                                 self.brush_picker, self.labels.picker,
                                                 self.labels.overwrite))
        self.propagation = PropagationPanel(viewer, self.session, self._image, self._previewed_object, self.labels,
                                            self.clear_prompts, self.start_worker, self.model.show)
        self.refine = RefinePanel(viewer, self.session, self._image, self.labels, self.start_worker, self.model.show)
        self.extend([*self.model.widgets, *self.layers_fold.widgets,
                     row(self.commit_button, self.clear_button, self.brush_button), *self.propagation.widgets,
                     *self.refine.widgets])

        self._watched: list = []
        self._modifiers: set = set()  # modifiers held at the last press on the points layer
        self._editing_points = False
        self.commit_button.changed.connect(self.commit)
        self.refine.selected_button.changed.connect(self.refine_selected)
        self.refine.settings.edited.connect(self.preview_control.update)  # the refined object's prompt changed
        self.clear_button.changed.connect(self.clear_prompts)
        self.model.image_picker.changed.connect(self._on_image_changed)
        self.model.ready.connect(self._on_model_ready)
        self.points_picker.changed.connect(self._watch_prompt_layers)
        self.shapes_picker.changed.connect(self._watch_prompt_layers)
        self.brush_picker.changed.connect(self._watch_prompt_layers)
        self.brush_picker.changed.connect(self.labels.picker.reset_choices)  # never offered as the labels target
        self.brush_button.changed.connect(self.brush)
        viewer.dims.events.current_step.connect(self.preview_control.update)
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self._watch_prompt_layers()
        if self.session.predictor is not None:  # another dock of this viewer loaded a model already
            self._on_model_ready()

    # --- the parts tests and users reach through the dock (see also Dock) ---------------------------------------

    labels_picker = property(lambda self: self.labels.picker)
    overwrite = property(lambda self: self.labels.overwrite)
    preview = property(lambda self: self.preview_control.preview)
    preview_layer = property(lambda self: self.preview_control.layer)
    predict_request = property(lambda self: self.preview_control.request)
    shown_request = property(lambda self: self.preview_control.shown_request)
    propagated_id = property(lambda self: self.propagation.propagated_id)

    @propagated_id.setter
    def propagated_id(self, value) -> None:
        self.propagation.propagated_id = value

    def shown_masks(self) -> np.ndarray:
        return self.preview_control.shown_masks()

    def next_candidate(self) -> None:
        self.preview_control.next_candidate()

    def propagate(self) -> None:
        self.propagation.propagate()

    def mark_end(self) -> None:
        self.propagation.mark_end()

    def fill_between_key_slices(self) -> None:
        self.propagation.fill_between_key_slices()

    def _image(self):
        return self.image_picker.value

    def _prompt_layers(self):
        return self.image_picker.value, self.points_picker.value, self.shapes_picker.value, self.brush_picker.value

    def _brush_choices(self, widget=None):
        """Labels layers that may hold brush scribbles: not the preview, not the labels being written."""
        preview, labels = getattr(self, "preview_control", None), getattr(self, "labels", None)  # None while built
        excluded = (preview and preview.layer, labels and labels.value)
        return [layer for layer in self.viewer.layers if isinstance(layer, Labels) and layer not in excluded]

    def _previewed_object(self):
        """(plane index, (H, W) mask) of the single previewed object, or None."""
        control = self.preview_control
        preview = control.preview
        if preview is None or len(preview.masks) != 1 or not control.settled:
            return None
        mask = np.zeros(plane_shape(preview.image), dtype=bool)
        row0, col0, row1, col1 = preview.window
        mask[row0:row1, col0:col1] = control.shown_masks()[0]
        return preview.index, mask

    def closing(self) -> None:
        self.preview_control.closed = True
        self.propagation.task.close()
        self.refine.task.close()
        self.viewer.dims.events.current_step.disconnect(self.preview_control.update)
        self.viewer.layers.events.inserted.disconnect(self._refresh_layers)
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        self._unwatch()

    # --- layers -------------------------------------------------------------------------------------------

    def _refresh_layers(self, event=None) -> None:
        for picker in (self.points_picker, self.shapes_picker, self.brush_picker, self.labels.picker):
            picker.reset_choices()

    def _on_layer_removed(self, event=None) -> None:
        self._refresh_layers()
        preview = self.preview_control.preview
        image = self.image_picker.value
        if preview is not None and (preview.image not in self.viewer.layers or preview.image is not image):
            self.preview_control.drop_layer()  # its image is gone: so is its preview

    def _on_model_ready(self) -> None:
        predictor = self.session.predictor
        self.preview_control.forget_logits()
        self.propagation.model_ready(predictor)
        self.refine.model_ready(predictor)
        self.ensure_prompt_layers()
        self.preview_control.update()

    def _on_image_changed(self, event=None) -> None:
        self.preview_control.drop_layer()
        if self.session.predictor is not None:
            self.ensure_prompt_layers()
        self.preview_control.update()

    def image_replaced(self) -> None:
        """The chosen image layer holds another image now (its data was replaced): forget what was previewed for
        the last one and embed this one."""
        self.preview_control.target = None
        self.preview_control.drop_layer()
        self.preview_control.forget_logits()
        self.model.embed_current_plane()
        self.preview_control.update()

    def ensure_prompt_layers(self) -> None:
        """Create the Points and Shapes layers if none is chosen (with the image's transforms); the points layer
        ends up active, in add mode."""
        image = self.image_picker.value
        if image is None:
            return
        if self.points_picker.value is None:
            layer = add_points_layer(self.viewer, image)
            self.points_picker.reset_choices()
            self.points_picker.value = layer
        if self.shapes_picker.value is None:
            with selection_kept(self.viewer):
                layer = add_shapes_layer(self.viewer, image)
            self.shapes_picker.reset_choices()
            self.shapes_picker.value = layer
        self.viewer.layers.selection.active = self.points_picker.value
        self.points_picker.value.mode = "add"

    def _unwatch(self) -> None:
        for layer in self._watched:
            layer.events.data.disconnect(self._on_prompt_data)
            if isinstance(layer, Labels):
                layer.events.paint.disconnect(self._on_prompt_data)
            if self._note_modifiers in layer.mouse_drag_callbacks:
                layer.mouse_drag_callbacks.remove(self._note_modifiers)

    def _watch_prompt_layers(self, event=None) -> None:
        """Listen to the chosen prompt layers' edits, and give them the dock's keys."""
        self._unwatch()
        self._watched = [layer for layer in (self.points_picker.value, self.shapes_picker.value,
                                             self.brush_picker.value) if layer]
        for layer in self._watched:
            layer.events.data.connect(self._on_prompt_data)
            if isinstance(layer, Labels):  # a brush stroke, once finished
                layer.events.paint.connect(self._on_prompt_data)
            for key, method in KEYS.items():
                if isinstance(layer, Labels) and key in BRUSH_KEEPS:
                    continue
                layer.bind_key(key, lambda _layer, method=method: getattr(self, method)(), overwrite=True)
        points = self.points_picker.value
        if points is not None:
            points.mouse_drag_callbacks.insert(0, self._note_modifiers)
            points.bind_key("t", lambda _layer: self.toggle_polarity(), overwrite=True)
        shapes = self.shapes_picker.value
        if shapes is not None:
            shapes.bind_key("t", lambda _layer: self.toggle_shape_polarity(), overwrite=True)
        brush = self.brush_picker.value
        if brush is not None:
            brush.bind_key("t", lambda _layer: self.toggle_brush_polarity(), overwrite=True)
        self.preview_control.update()

    def brush(self) -> None:
        """Paint scribbles: the brush layer (created over the image when none is chosen) becomes active, in paint
        mode with the object's label."""
        image = self.image_picker.value
        if image is None:
            show_info("Scribbles need an image: choose one under Model.")
            return
        layer = self.brush_picker.value
        if layer is None or layer not in self.viewer.layers:
            layer = add_brush_layer(self.viewer, image)
            self.brush_picker.reset_choices()
            self.brush_picker.value = layer
        self.viewer.layers.selection.active = layer
        layer.mode = "paint"
        self.model.show("Paint over the object (label 1) or the background (label 2, T switches); each finished "
                        "stroke updates the preview.")

    def toggle_brush_polarity(self) -> bool:
        """Switch the brush between the object's label and the background's; returns True for the object."""
        brush = self.brush_picker.value
        if brush is None:
            return True
        positive = brush.selected_label != BRUSH_POSITIVE
        brush.selected_label = BRUSH_POSITIVE if positive else BRUSH_NEGATIVE
        self.model.show(f"The brush paints {'the object' if positive else 'the background'}.")
        return positive

    # --- prompts ------------------------------------------------------------------------------------------

    def toggle_polarity(self) -> bool:
        """Switch new points between positive and negative; returns the new polarity (True: positive)."""
        points = self.points_picker.value
        if points is None:
            return True
        defaults = points.feature_defaults
        positive = not (bool(defaults["positive"].iloc[0]) if "positive" in defaults else True)
        points.feature_defaults["positive"] = positive
        self.model.show(f"New points are {'positive' if positive else 'negative'}.")
        return positive

    def _note_modifiers(self, layer, event) -> None:
        """Mouse press on the points layer: remember the modifiers held (the point is added on release)."""
        self._modifiers = set(event.modifiers)

    def toggle_shape_polarity(self) -> bool:
        """Turn the selected shapes (scribbles) from positive to negative and back, or, with none selected, switch
        new shapes; returns the new shapes' polarity (True: positive)."""
        shapes = self.shapes_picker.value
        if shapes is None:
            return True
        defaults = shapes.feature_defaults
        positive = bool(defaults["positive"].iloc[0]) if "positive" in defaults else True
        if flip_selected_shapes(shapes):
            self.model.show("The selected shapes' polarity was switched.")
            self.preview_control.update()
            return positive
        shapes.feature_defaults["positive"] = not positive
        self.model.show(f"New scribbles are {'negative' if positive else 'positive'}.")
        return not positive

    def _on_prompt_data(self, event=None) -> None:
        action = str(getattr(event, "action", "")).split(".")[-1].lower()
        if action in ("adding", "removing", "changing") or self._editing_points:
            return  # wait for the finished edit
        points = self.points_picker.value
        if points is not None and event is not None and event.source is points:
            added = list(getattr(event, "data_indices", ()) or ()) if action == "added" else []
            modifiers, self._modifiers = self._modifiers, set()
            if added and "Control" in modifiers:
                self._refine_clicked(points, added)
                return
            if added and "Alt" in modifiers and "positive" in points.features:
                features = points.features.copy()
                column_index = features.columns.get_loc("positive")
                for index in added:
                    features.iloc[index, column_index] = False  # napari gives added points as -1, -2, ...
                points.features = features
            if "positive" in points.features:
                colour_points(points)
        shapes = self.shapes_picker.value
        if shapes is not None and event is not None and event.source is shapes and action == "added":
            colour_shapes(shapes)  # a scribble's colour says whether it is positive or negative
        self.preview_control.update()

    def _refine_clicked(self, points, added) -> None:
        """A Ctrl+click: the point is not a prompt; the object under it is refined."""
        position = points.data_to_world(points.data[added[-1]])
        self._editing_points = True
        try:
            points.selected_data = {len(points.data) + i if i < 0 else i for i in added}
            points.remove_selected()
        finally:
            self._editing_points = False
        self.refine_at(position)

    # --- refine -------------------------------------------------------------------------------------------

    def refine_at(self, world_position) -> None:
        """Start refining the object of the labels layer under ``world_position`` (the preview shows SAM's
        version; points correct it; C replaces it)."""
        self._refine(self.refine.target_at(world_position))

    def refine_selected(self) -> None:
        """Start refining the labels layer's selected label on the shown plane."""
        self._refine(self.refine.selected_target())

    def _refine(self, target) -> None:
        if target is None:
            return
        self.preview_control.target = target
        self.model.show(f"Refining object {target.object_id}: add points to correct it, C replaces it, Shift+C "
                        "gives up.")
        self.preview_control.update()

    def refine_under_cursor(self) -> None:
        self.refine_at(self.viewer.cursor.position)

    # --- commit and clear ---------------------------------------------------------------------------------

    def commit(self) -> list[int]:
        """Write the previewed objects into the Labels layer (created if none is chosen): all or nothing, one
        undo step. A refined object is replaced under its own id."""
        control, image = self.preview_control, self.image_picker.value
        if control.preview is None or not control.settled or image is None or image is not control.preview.image:
            show_info("Nothing to commit yet: add a prompt and wait for its preview.")
            return []
        preview, masks = control.preview, control.shown_masks()
        labels = self.labels.layer(image)
        overwrite = self.labels.overwrite.value
        if preview.target is not None:
            target = preview.target
            held = target.mask  # the object on this plane: only its box is cleared, never a whole plane
            written, _ = self.labels.write(labels, lambda: replace_object(
                labels, image, target.object_id, [(preview.index, masks[0], preview.offset)], [preview.index],
                overwrite, region=(held.rows.start, held.cols.start, held.rows.stop, held.cols.stop)))
            ids = [target.object_id] if written else []
            if written:
                self.model.show(f"Object {target.object_id} replaced by its refined version.")
        else:
            written, ids = self.labels.write(labels, lambda: commit_masks(labels, image, masks, preview.index,
                                                                          overwrite, preview.offset))
            ids = ids or []
            if written:
                self.model.show(f"Committed {len(ids)} object(s): {ids}." if ids else
                                "Nothing new to write: those pixels are all labelled (tick overwrite).")
        if not written:
            return []
        self.clear_prompts()
        return ids

    def clear_prompts(self) -> None:
        """Remove the prompts on the shown plane and the preview (and stop refining), without committing."""
        image = self.image_picker.value
        self.preview_control.target = None
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
        brush = self.brush_picker.value
        if brush is not None and brush in self.viewer.layers:
            erase_plane(brush, image, index, plane_shape(image))
        self.preview_control.forget_logits()
        self.preview_control.update()
