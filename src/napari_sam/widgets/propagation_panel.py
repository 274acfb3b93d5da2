"""Propagate: extend the previewed object through the stack, as one undoable object of the Labels layer; and carry
every object of the shown plane at once, or fill an object's slices between its key slices.

The object previewed on the shown plane is propagated along the last non-displayed axis (z of a (t, z, y, x)
image, t of a (t, y, x) one) on a worker thread, reading one plane at a time, with a progress bar and a Cancel
button; a cancelled or failed run writes nothing. It uses the prompt model (any SAM checkpoint: each slice
prompted from the previous one), or a SAM2-family video checkpoint chosen in "propagate with" (loaded on first
use; the previewed mask is its prompt on the shown plane). "Ends" (E) marks the shown plane as where the
next propagated object ends (one mark each side of its start plane at most).

Correcting: go to a plane where the propagated object is wrong, prompt it again there (its preview should cover
mostly that object) and propagate again. With "correct the object under it" ticked, the
object keeps its id: it is replaced from that plane on, away from the plane it was first propagated from (both
ways when that plane is unknown), in one undo step.

"All objects" carries every object of the labels layer on the shown plane through the stack in one run (the
prompt model: one encoder run per slice for all of them), each keeping its id, no pixel given to two; on the other
planes each object is replaced by its propagation, in one undo step. "Key slices" (K) takes the object under the
mouse, or the previewed object: the planes along the stack axis where it is drawn are its key slices (a preview on
another plane than the committed object adds that plane), and the planes between them are filled, into unlabelled
pixels (or over anything with overwrite).
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, PushButton
from napari.utils.notifications import show_info

from ..bridge.labels_grid import labels_on_plane
from ..bridge.labels_writer import commit_object, extend_objects, object_under, replace_object
from ..bridge.slicing import StackAxis, current_index, leading_shape, plane_shape
from ..core.model import VIDEO_CHECKPOINTS
from ..core.settings import PropagationSettings
from ..core.workflows import interpolate, propagate, propagate_objects, propagate_video, propagate_video_objects
from .cancellable_task import CancellableTask
from .layout import Fold, column, narrow, row
from .settings_form import SettingsForm

#: The "propagate with" choice that uses the prompt model itself.
PROMPT_MODEL = "the prompt model"


class PropagationPanel:
    """The Propagate button, its options and its worker.

    Args:
        viewer: the napari viewer (its shown plane and mouse position).
        session: the viewer's model session.
        image: returns the image layer (or None).
        previewed: returns ``(plane index, (H, W) mask)`` of the single previewed object, or None.
        labels: the dock's :class:`~napari_sam.widgets.labels_target.LabelsTarget`.
        done: called after a successful write (the dock clears its prompts).
        start_worker, show: start a worker counted as the dock's work; show a status message.
    """

    def __init__(self, viewer, session, image, previewed, labels, done, start_worker, show):
        self.viewer, self.session, self.image, self.previewed = viewer, session, image, previewed
        self.labels, self.done = labels, done
        self.show = show
        self.video_model_picker = ComboBox(
            label="with", choices=[PROMPT_MODEL, *VIDEO_CHECKPOINTS], value=PROMPT_MODEL,
            tooltip="The prompt model prompts each slice from the previous one. A SAM2-family video checkpoint "
                    "(choose or type a hub id or folder) tracks the object with its memory of the slices seen.")
        self.video_model_picker.native.setEditable(True)
        narrow(self.video_model_picker)
        self.settings = SettingsForm(PropagationSettings)
        self.correct_object = CheckBox(
            text="correct the object under it", value=True,
            tooltip="When the previewed mask lies mostly on an existing object, propagating replaces that object "
                    "from this plane on (away from where it was first propagated) instead of adding a new one.")
        self.propagate_button = PushButton(text="Propagate (P)",
                                           tooltip="Extend the previewed object through the stack.")
        self.cancel_button = PushButton(text="Cancel")
        self.end_button = PushButton(text="Ends (E)", tooltip="Ends here: the next propagated object ends on the "
                                     "shown plane (press again to remove the mark).")
        self.all_button = PushButton(text="All objects", tooltip="Propagate all: carry every object of the labels "
                                     "on the shown plane through the stack at once, each keeping its id (the prompt "
                                     "model).")
        self.fill_button = PushButton(text="Key slices (K)", tooltip="Fill between key slices: the object under the "
                                      "mouse (or the previewed one) is filled on the planes between those where it is "
                                      "drawn.")
        self.task = CancellableTask("Propagation", self.propagate_button, self.cancel_button, start_worker, show)
        body = column(self.video_model_picker, *self.settings.widgets, self.correct_object, labels=True)
        self.options = Fold("Propagation options", body)
        self.widgets = [row(self.propagate_button, self.cancel_button), row(self.end_button, self.fill_button),
                        self.all_button, *self.options.widgets]
        self.propagate_button.changed.connect(self.propagate)
        self.end_button.changed.connect(self.mark_end)
        self.all_button.changed.connect(self.propagate_all)
        self.fill_button.changed.connect(self.fill_between_key_slices)
        self.propagated_id = None
        self._anchors: dict[int, int] = {}  # object id -> the plane it was first propagated from
        self.ends: set[tuple[int, ...]] = set()  # planes marked "ends here" for the next propagation

    def model_ready(self, predictor) -> None:
        """Show the settings the newly loaded checkpoint recommends."""
        self.settings.show(predictor.recommended.propagation)

    def propagate(self) -> None:
        """Propagate the single previewed object along the stack axis and commit it under one id."""
        image, predictor, previewed = self.image(), self.session.predictor, self.previewed()
        if image is None or predictor is None or previewed is None or not previewed[0]:
            show_info("Propagate needs a stack and one previewed object on the shown plane.")
            return
        settings = self.settings.checked("propagation options")
        if settings is None:
            return
        index, first = previewed
        axis = len(index) - 1
        target, directions = self._correction_target(image, index, axis, first)
        volume = StackAxis(image, index, axis)  # read one plane at a time, on the worker
        options = dict(contrast_limits=tuple(image.contrast_limits), rgb=image.rgb, directions=directions,
                       bounds=self._bounds(index, axis))
        self.ends.clear()
        video_name, session = self._video_name(), self.session

        def work(report, cancelled):
            if video_name is None:
                return propagate(predictor, volume, index[axis], 0, first, settings, progress=report,
                                 cancel=cancelled, **options)
            model, geometry = session.video_model(video_name, predictor.device)
            return propagate_video(model, volume, index[axis], 0, mask=first, geometry=geometry, settings=settings,
                                   progress=report, cancel=cancelled, **options)

        self.task.run(work, lambda result: self._commit(image, index, axis, result, target, directions))

    def _video_name(self) -> str | None:
        """The video checkpoint chosen in "propagate with", or None for the prompt model."""
        name = self.video_model_picker.native.currentText().strip()
        return None if not name or name == PROMPT_MODEL else name

    def _correction_target(self, image, index, axis, mask) -> tuple[int | None, tuple[int, ...]]:
        """(the object id to re-propagate into or None for a new object, the directions to propagate)."""
        labels = self.labels.value
        if labels is None or not self.correct_object.value:
            return None, (1, -1)
        plane, target, n_planes = index[axis], None, leading_shape(image)[axis]
        try:  # this plane, else a neighbouring one (the object stopped just short of this plane)
            for other in (plane, plane - 1, plane + 1):
                if target is None and 0 <= other < n_planes:
                    target = object_under(labels, image, index[:axis] + (other,), mask)
        except ValueError:
            return None, (1, -1)
        if target is None:
            return None, (1, -1)
        anchor = self._anchors.get(target)
        directions = (1, -1) if anchor is None or anchor == plane else ((1,) if plane > anchor else (-1,))
        return target, directions

    def _commit(self, image, index, axis, result, target=None, directions=(1, -1)) -> None:
        labels = self.labels.layer(image)
        planes = [(index[:axis] + (z,), result.masks[z]) for z in range(result.start, result.stop + 1)]
        overwrite = self.labels.overwrite.value
        if target is None:
            written, new_id = self.labels.write(labels, lambda: commit_object(labels, image, planes, overwrite))
            if not written:
                return
            if new_id is None:
                self.show("Nothing new to write: the object's pixels are all taken (tick overwrite).")
                return
            self.propagated_id = new_id
            self._anchors[new_id] = index[axis]
            self.show(f"Object {new_id} spans planes {result.start}..{result.stop}.")
        else:
            plane, n_planes = index[axis], len(result.masks)
            cleared = [index[:axis] + (z,) for z in range(n_planes)
                       if (z >= plane and 1 in directions) or (z <= plane and -1 in directions)]
            if not self.labels.write(labels, lambda: replace_object(labels, image, target, planes, cleared,
                                                                    overwrite))[0]:
                return
            self.propagated_id = target
            self.show(f"Object {target} re-propagated from plane {plane}: planes {result.start}..{result.stop} "
                      "rewritten.")
        self.done()

    # --- ends, all objects, key slices --------------------------------------------------------------------------

    def _shown(self):
        """(image, shown plane index) of a stack, or None (with a message)."""
        image = self.image()
        if image is None or not leading_shape(image):
            show_info("This needs a stack (an image with planes) and a loaded model.")
            return None
        return image, current_index(image, self.viewer.dims.point)

    def mark_end(self) -> None:
        """Mark (or unmark) the shown plane as where the next propagated object ends."""
        shown = self._shown()
        if shown is None:
            return
        index = shown[1]
        self.ends.symmetric_difference_update({index})
        planes = sorted(mark[-1] for mark in self.ends if mark[:-1] == index[:-1])
        self.show(f"The next propagated object ends at plane(s) {planes}." if planes else "No end marked.")

    def _bounds(self, index: tuple[int, ...], axis: int) -> tuple[int | None, int | None]:
        """(first, last) planes the object propagated from ``index`` may reach: the nearest marks each side."""
        start = index[axis]
        marks = [mark[axis] for mark in self.ends if mark[:axis] == index[:axis]]
        below, above = [m for m in marks if m < start], [m for m in marks if m > start]
        return max(below, default=None), min(above, default=None)

    def _ready(self, needs: str):
        """(image, shown plane index, predictor, labels layer, settings) for an action on the labels of a stack, or
        None (with the message ``needs``, or the settings' own)."""
        shown, predictor, labels = self._shown(), self.session.predictor, self.labels.value
        if shown is None or predictor is None or labels is None:
            show_info(needs)
            return None
        settings = self.settings.checked("propagation options")
        return None if settings is None else (*shown, predictor, labels, settings)

    def propagate_all(self) -> None:
        """Carry every object of the labels on the shown plane through the stack, each keeping its id."""
        ready = self._ready("Propagate all needs a stack, a loaded model and the labels layer with objects on the "
                            "shown plane (under Layers).")
        if ready is None:
            return
        image, index, predictor, labels, settings = ready
        plane = labels_on_plane(labels, image, index, plane_shape(image))
        if not plane.any():
            show_info(f"{labels.name!r} has no objects on the shown plane to propagate.")
            return
        axis = len(index) - 1
        volume = StackAxis(image, index, axis)
        options = dict(contrast_limits=tuple(image.contrast_limits), rgb=image.rgb)
        video_name, session = self._video_name(), self.session

        def work(report, cancelled):
            if video_name is None:
                return propagate_objects(predictor, volume, index[axis], 0, plane, settings, progress=report,
                                         cancel=cancelled, **options)
            model, geometry = session.video_model(video_name, predictor.device)
            return propagate_video_objects(model, volume, index[axis], 0, plane, geometry=geometry,
                                           settings=settings, progress=report, cancel=cancelled, **options)

        self.task.run(work, lambda result: self._write_all(image, labels, index, axis, result))

    def _write_all(self, image, labels, index, axis, result) -> None:
        start = index[axis]
        planes = [(index[:axis] + (z,), result.labels[z]) for z in range(len(result.labels))
                  if z != start and result.labels[z].any()]
        ids = list(result.extents)
        if not self.labels.write(labels, lambda: extend_objects(labels, image, planes, ids,
                                                                self.labels.overwrite.value))[0]:
            return
        spans = [last - first + 1 for first, last in result.extents.values()]
        self.show(f"Propagated {len(ids)} object(s) from plane {start}: {min(spans)} to {max(spans)} planes each.")

    def fill_between_key_slices(self) -> None:
        """Fill the planes between the key slices of the object under the mouse, or of the previewed object (the
        preview becomes a key slice of the labelled object it continues, on the nearest plane that has one)."""
        ready = self._ready("Fill between key slices needs a stack, a loaded model and the labels layer holding the "
                            "object (under Layers).")
        if ready is None:
            return
        image, index, predictor, labels, settings = ready
        axis, size = len(index) - 1, plane_shape(image)
        object_id, previewed_key = self._object_to_fill(image, labels, index, axis, size)
        if object_id is None:
            show_info("Point at an object of the labels layer, or preview the object on another plane than the one "
                      "where it is committed, then press K.")
            return
        keys = {}
        for z in range(leading_shape(image)[axis]):
            mask = labels_on_plane(labels, image, index[:axis] + (z,), size) == object_id
            if mask.any():
                keys[z] = mask
        drawn = set(keys)
        if previewed_key is not None:
            keys[previewed_key[0]] = previewed_key[1]
        if len(keys) < 2:
            show_info(f"Object {object_id} is drawn on {len(keys)} plane(s) of this stack: commit it on one plane and "
                      "preview it on another (or draw it on two or more planes), then press K.")
            return
        volume = StackAxis(image, index, axis)
        limits, rgb = tuple(image.contrast_limits), image.rgb

        def work(report, cancelled):
            return interpolate(predictor, volume, 0, keys, settings, contrast_limits=limits, rgb=rgb,
                               progress=report, cancel=cancelled)

        self.task.run(work, lambda result: self._write_filled(image, labels, index, axis, object_id, drawn, result))

    def _object_to_fill(self, image, labels, index, axis, size) -> tuple[int | None, tuple | None]:
        """(the object to fill, a key slice (plane, mask) the preview adds, or None): the object under the mouse on
        the shown plane; else the one under the previewed mask there; else the object the preview continues, the
        one covering most of it on the nearest plane along the stack that has one."""
        position = np.asarray(image.world_to_data(np.asarray(self.viewer.cursor.position)[-image.ndim:]))
        row_, col = (int(round(v)) for v in position[-2:])
        if 0 <= row_ < size[0] and 0 <= col < size[1]:
            found = int(labels_on_plane(labels, image, index, size, (row_, col, row_ + 1, col + 1))[0, 0])
            if found:
                return found, None
        previewed = self.previewed()
        if previewed is None:
            return None, None
        plane_index, mask = previewed
        under = object_under(labels, image, plane_index, mask)
        if under is not None:
            return under, None
        start, n_planes = plane_index[axis], leading_shape(image)[axis]
        for distance in range(1, n_planes):
            for z in (start - distance, start + distance):
                if 0 <= z < n_planes:
                    found = object_under(labels, image, plane_index[:axis] + (z,), mask)
                    if found is not None:
                        return found, (start, mask)
        return None, None

    def _write_filled(self, image, labels, index, axis, object_id, drawn, result) -> None:
        planes = [(index[:axis] + (z,), np.where(result.masks[z], object_id, 0))
                  for z in range(result.start, result.stop + 1) if z not in drawn]
        if not self.labels.write(labels, lambda: extend_objects(labels, image, planes, [],
                                                                self.labels.overwrite.value))[0]:
            return
        self.show(f"Object {object_id}: planes {result.start}..{result.stop} filled between its key slices.")
        self.done()
