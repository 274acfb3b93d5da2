"""Refine existing objects with SAM: one at a time in the preview, or all of a labels layer at once.

One object: Ctrl+click on it (in the points layer) or press R with the mouse over it. Its box (and, for
checkpoints trained with mask prompts, its mask) becomes the prompt and the preview shows SAM's version; positive
and negative points correct it; C replaces the object under its own id in one undo step, Shift+C gives up.

All objects: "Refine all" runs every object of the shown plane (or of every plane) through SAM on a worker, with a
progress bar and a Cancel button, into a new Labels layer or in place (one undo step).
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, PushButton
from napari.utils.notifications import show_info

from ..bridge.labels_grid import labels_on_plane
from ..bridge.labels_writer import replace_plane_objects
from ..bridge.slicing import current_index, plane_shape, plane_view, planes_to_run
from ..core.objects import cropped
from ..core.settings import RefineSettings
from ..core.workflows import refine_objects
from .cancellable_task import CancellableTask, plane_progress
from .layout import Fold, column, row
from .preview import RefineTarget
from .prompt_layers import image_transforms, selection_kept, spatial_shape, unwrapped
from .settings_form import SettingsForm

HINT = "Ctrl+click an object, or press R over it, to refine it with SAM; C replaces it."


class RefinePanel:
    """Refinement options, Refine all and Cancel.

    Args:
        viewer, session: the napari viewer and its model session.
        image: returns the image layer (or None).
        labels: the dock's :class:`~napari_sam.widgets.labels_target.LabelsTarget` (the objects to refine).
        start_worker, show: start a worker counted as the dock's work; show a status message.
    """

    def __init__(self, viewer, session, image, labels, start_worker, show):
        self.viewer, self.session, self.image, self.labels, self.show = viewer, session, image, labels, show
        self.settings = SettingsForm(RefineSettings)
        self.in_place = CheckBox(text="in place", value=False,
                                 tooltip="Replace the objects in their labels layer (one undo step); unticked, "
                                         "the refined objects go into a new labels layer.")
        self.whole_stack = CheckBox(text="every plane", value=False,
                                    tooltip="Refine the objects of every plane of a stack, not only the shown one.")
        self.refine_all_button = PushButton(text="Refine all", tooltip="Run every object of the labels layer "
                                                                       "through SAM (box, and mask if ticked).")
        self.cancel_button = PushButton(text="Cancel")
        self.selected_button = PushButton(text="Refine selected label",
                                          tooltip="Refine the labels layer's selected label on the shown plane.")
        self.task = CancellableTask("Refine all", self.refine_all_button, self.cancel_button, start_worker, show)
        body = column(self.selected_button, *self.settings.widgets, row(self.in_place, self.whole_stack),
                      row(self.refine_all_button, self.cancel_button), labels=False)
        self.fold = Fold("Refine existing objects", body, tooltip=HINT)
        self.widgets = self.fold.widgets
        self.refine_all_button.changed.connect(self.refine_all)
        self.result_layer = None

    def model_ready(self, predictor) -> None:
        self.settings.show(predictor.recommended.refine)

    def _shown_objects(self):
        """(image, labels layer, plane index, the labels on the shown image plane), or None (with a message)."""
        image, labels = self.image(), self.labels.value
        if image is None or labels is None:
            show_info("Choose the labels layer whose objects to refine (under Layers).")
            return None
        index = current_index(image, self.viewer.dims.point)
        return image, labels, index, labels_on_plane(labels, image, index, plane_shape(image))

    def target_at(self, world_position) -> RefineTarget | None:
        """The object of the labels layer under ``world_position`` on the shown plane, or None (with a message)."""
        shown = self._shown_objects()
        if shown is None:
            return None
        image, labels, index, plane = shown
        data_position = np.asarray(image.world_to_data(np.asarray(world_position)[-image.ndim:]), dtype=float)
        row_, col = (int(round(v)) for v in data_position[-2:])
        if not (0 <= row_ < plane.shape[0] and 0 <= col < plane.shape[1]):
            show_info("Point at an object inside the image to refine it.")
            return None
        return self._target(labels, index, plane, int(plane[row_, col]))

    def selected_target(self) -> RefineTarget | None:
        """The labels layer's selected label on the shown plane, or None (with a message)."""
        shown = self._shown_objects()
        return None if shown is None else self._target(shown[1], shown[2], shown[3], int(shown[1].selected_label))

    @staticmethod
    def _target(labels, index, plane, object_id) -> RefineTarget | None:
        mask = cropped(plane == object_id) if object_id else None
        if mask is None:
            show_info(f"There is no object of {labels.name!r} there to refine on this plane.")
            return None
        return RefineTarget(object_id, index, mask)

    def refine_all(self) -> None:
        """Refine every object of the shown plane (or every plane) on a worker."""
        image, labels, predictor = self.image(), self.labels.value, self.session.predictor
        if image is None or labels is None or predictor is None:
            show_info("Refine all needs an image, a loaded model and the labels layer to refine.")
            return
        settings = self.settings.checked("refinement options")
        if settings is None:
            return
        indices = planes_to_run(image, self.viewer.dims.point, self.whole_stack.value)
        shape, limits, rgb = plane_shape(image), tuple(image.contrast_limits), image.rgb

        def work(report, cancelled):
            results = []
            for number, plane_index in enumerate(indices):
                objects = labels_on_plane(labels, image, plane_index, shape)
                if objects.any():
                    result = refine_objects(predictor, plane_view(image, plane_index), objects, settings,
                                            contrast_limits=limits, rgb=rgb,
                                            progress=plane_progress(report, number, len(indices)), cancel=cancelled)
                    results.append((plane_index, result, np.unique(objects[objects != 0])))
            return results

        self.task.run(work, lambda results: self._write(image, labels, results))

    def _write(self, image, labels, results) -> None:
        count = sum(len(result.objects) for _, result, _ in results)
        kept = [object_id for _, result, _ in results for object_id in result.kept]
        if not count:
            self.show(f"{labels.name!r} has no objects here to refine.")
            return
        if self.in_place.value:
            planes = [(plane_index, result.labels(np.int64), ids) for plane_index, result, ids in results]
            if not self.labels.write(labels, lambda: replace_plane_objects(labels, image, planes))[0]:
                return
            where = f"in {labels.name!r}"
        else:
            data = np.zeros(spatial_shape(image), dtype=np.uint32)
            for plane_index, result, _ in results:
                data[plane_index] = result.labels(np.uint32)
            with selection_kept(self.viewer):
                self.result_layer = unwrapped(self.viewer.add_labels(data, name=f"{labels.name} refined",
                                                                     **image_transforms(image)))
            where = f"into {self.result_layer.name!r}"
        note = f"; {len(kept)} came out empty and kept their pixels ({kept[:10]})" if kept else ""
        self.show(f"Refined {count} object(s) {where}{note}.")
