"""The "Segment concept (SAM3)" dock: every instance of a text ("nucleus") and/or of exemplar boxes on the shown
plane, previewed, then committed as new objects of a Labels layer in one undo step.

Exemplars are rectangles (or polygons, ellipses: their box) in the exemplar Shapes layer on the shown plane; one
drawn with Alt held is a counter-example (red), and ``T`` flips the selected exemplars. Find runs on a worker with
a Cancel button; the preview shows the instances in their own colours; Commit (``C`` on the exemplar layer) writes
them with fresh ids and adds their scores to the Labels layer's features table. A model other than SAM3's concept
checkpoint, an empty text without exemplars, or no image says so and changes nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from magicgui.widgets import FloatSpinBox, LineEdit, PushButton, create_widget
from napari.layers import Shapes
from napari.utils.notifications import show_info

from ..bridge.labels_writer import commit_masks
from ..bridge.layer_prompts import read_exemplars
from ..bridge.slicing import current_index, plane_view
from ..bridge.transforms import window_to_world
from ..core.workflows import segment_concept
from .cancellable_task import CancellableTask
from .dock import Dock
from .labels_target import LabelsTarget
from .layout import Fold, column, narrow, row
from .prompt_layers import (
    add_shapes_layer,
    colour_shapes,
    flip_selected_shapes,
    selection_kept,
    shape_polarity,
    unwrapped,
)


class ConceptWidget(Dock):
    """Text and exemplars, the minimum score, Find / Cancel, Commit."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.preview_layer = None
        self.text = LineEdit(label="text", tooltip="What to find, e.g. 'nucleus' (empty: the exemplars alone).")
        self.exemplars_picker = create_widget(annotation=Shapes, label="exemplars", options={"nullable": True})
        narrow(self.exemplars_picker)
        self.threshold = FloatSpinBox(label="min score", value=0.5, min=0.0, max=1.0, step=0.05,
                                      tooltip="Keep instances whose score (sigmoid(logit) x presence) is above this.")
        self.find_button = PushButton(text="Find")
        self.cancel_button = PushButton(text="Cancel")
        self.draw_button = PushButton(text="Draw exemplars", tooltip="Draw boxes around examples of the concept "
                                      "(Alt: a counter-example; T flips the selected ones).")
        self.commit_button = PushButton(text="Commit (C)", tooltip="Write the previewed instances as new objects; "
                                                                   "one Ctrl+Z undoes it.")
        self.labels = LabelsTarget(napari_viewer, lambda: [self.preview_layer])
        self.task = CancellableTask("Segment concept", self.find_button, self.cancel_button, self.start_worker,
                                    self.model.show)
        fold = Fold("Layers", column(self.exemplars_picker, self.labels.picker, self.labels.overwrite))
        self.extend([*self.model.widgets, self.text, self.threshold, self.draw_button, *fold.widgets,
                     row(self.find_button, self.cancel_button), self.commit_button])
        self.found = None  # (image layer, plane index, ConceptResult) of the preview
        self._alt = False
        self.find_button.changed.connect(self.find)
        self.draw_button.changed.connect(self.draw_exemplars)
        self.commit_button.changed.connect(self.commit)
        self.text.native.returnPressed.connect(self.find)
        self.exemplars_picker.changed.connect(self._watch_exemplars)

    def closing(self) -> None:
        self.task.close()

    # --- exemplars ---------------------------------------------------------------------------------------------

    def exemplar_layer(self):
        """The chosen exemplar layer, or a new one over the image (rectangles, active)."""
        layer = self.exemplars_picker.value
        if layer is None or layer not in self.viewer.layers:
            image = self.image_picker.value
            layer = add_shapes_layer(self.viewer, image, name="SAM3 exemplars")
            layer.mode = "add_rectangle"
            self.exemplars_picker.reset_choices()
            self.exemplars_picker.value = layer
        return layer

    def draw_exemplars(self) -> None:
        """Make the exemplar layer active, in rectangle mode."""
        if self.image_picker.value is None:
            show_info("Choose an image first.")
            return
        layer = self.exemplar_layer()
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"

    def _watch_exemplars(self, layer=None) -> None:
        layer = self.exemplars_picker.value
        if layer is None or getattr(layer, "_napari_sam_concept", False):
            return
        layer._napari_sam_concept = True
        layer.mouse_drag_callbacks.append(self._on_press)
        layer.events.data.connect(lambda event: self._on_shapes(layer, event))
        layer.bind_key("t", lambda _: self.flip_selected(layer), overwrite=True)
        layer.bind_key("c", lambda _: self.commit(), overwrite=True)

    def _on_press(self, layer, event) -> None:
        self._alt = "Alt" in set(event.modifiers)

    def _on_shapes(self, layer, event) -> None:
        if str(getattr(event, "action", "")).split(".")[-1].lower() != "added":
            return
        values = shape_polarity(layer)
        if self._alt and len(values):
            values = values.copy()
            values[-1] = False
            layer.features = pd.DataFrame({"positive": values})
        colour_shapes(layer)

    def flip_selected(self, layer) -> None:
        """Turn the selected exemplars into counter-examples and back."""
        flip_selected_shapes(layer)

    # --- find and commit ---------------------------------------------------------------------------------------

    def find(self) -> None:
        """Search the shown plane on a worker; the instances are previewed."""
        image, predictor = self.image_picker.value, self.predictor
        if image is None or predictor is None:
            show_info("Choose an image and load a SAM3 concept checkpoint first.")
            return
        if getattr(predictor, "concept", None) is None:
            show_info(f"{self.session.name} takes points and boxes (the Segment Anything dock): text and exemplar "
                      "prompts need a SAM3 concept checkpoint.")
            return
        index = current_index(image, self.viewer.dims.point)
        boxes, labels = read_exemplars(self.exemplars_picker.value, image, index, self.viewer.dims.point)
        text = self.text.value.strip() or None
        if text is None and not len(boxes):
            show_info("Type what to find, or draw exemplar boxes (Alt: a counter-example).")
            return
        view, limits, rgb, threshold = plane_view(image, index), tuple(image.contrast_limits), image.rgb, \
            self.threshold.value

        def work(report, cancelled):
            with predictor.locked():
                predictor.set_image(view, contrast_limits=limits, rgb=rgb)
                return segment_concept(predictor, text, boxes if len(boxes) else None, labels, threshold=threshold)

        self.task.run(work, lambda result: self._show(image, index, result))

    def _show(self, image, index, result) -> None:
        self.found = (image, index, result)
        plane = np.asarray(result.labels(out=np.zeros(result.image_size, dtype=np.uint32)))
        data = plane.reshape((1,) * len(index) + plane.shape)
        affine = window_to_world(image, index)
        if self.preview_layer is None or self.preview_layer not in self.viewer.layers:
            with selection_kept(self.viewer):
                self.preview_layer = unwrapped(self.viewer.add_labels(data, name="SAM3 concept preview",
                                                                      opacity=0.5, affine=affine))
            self.preview_layer.editable = False
        else:
            self.preview_layer.data, self.preview_layer.affine = data, affine
        self.model.show(f"Found {len(result.objects)} instance(s): Commit (C) keeps them." if result.objects else
                        "Found no instance above the min score: lower it, change the text or add exemplars.")

    def commit(self) -> None:
        """Write the previewed instances as new objects (one undo step), with their scores in the features."""
        if self.found is None or not self.found[2].objects:
            show_info("Nothing to commit: Find instances first.")
            return
        image, index, result = self.found
        labels = self.labels.layer(image)
        masks = result.masks
        written, ids = self.labels.write(labels, lambda: commit_masks(labels, image, masks, index,
                                                                      self.labels.overwrite.value, per_mask=True))
        if not written:
            return
        kept = [i for i, value in enumerate(ids) if value is not None]
        self._record_scores(labels, [ids[i] for i in kept], result.scores[kept])
        ids = [ids[i] for i in kept]
        self.found = None
        if self.preview_layer is not None and self.preview_layer in self.viewer.layers:
            self.preview_layer.data = np.zeros_like(self.preview_layer.data)
        self.model.show(f"Committed {len(ids)} object(s).")

    @staticmethod
    def _record_scores(labels, ids, scores) -> None:
        rows = pd.DataFrame({"index": ids, "concept_score": np.asarray(scores, dtype=float)})
        old = labels.features
        if len(old) and "index" in old:
            rows = pd.concat([old[~old["index"].isin(ids)], rows], ignore_index=True)
        labels.features = rows
