"""Propagate: extend the previewed object through the stack, as one undoable object of the Labels layer.

The object previewed on the shown plane is propagated along the last non-displayed axis (z of a (t, z, y, x)
image, t of a (t, y, x) one) on a worker thread, reading one plane at a time, with a progress bar and a Cancel
button; a cancelled or failed run writes nothing. It uses the prompt model (any SAM checkpoint: each slice
prompted from the previous one), or a SAM2-family video checkpoint chosen in "propagate with" (loaded on first
use; the previewed mask is its prompt on the shown plane).

Correcting: go to a plane where the propagated object is wrong, prompt it again there (its preview should cover
mostly that object) and propagate again. With "correct the object under it" ticked, the
object keeps its id: it is replaced from that plane on, away from the plane it was first propagated from (both
ways when that plane is unknown), in one undo step.
"""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, PushButton
from napari.utils.notifications import show_info

from ..bridge.labels_writer import commit_object, object_under, replace_object
from ..bridge.slicing import StackAxis, leading_shape
from ..core.model import VIDEO_CHECKPOINTS
from ..core.settings import PropagationSettings
from ..core.workflows.propagation import propagate, propagate_video
from .cancellable_task import CancellableTask
from .layout import Fold, column, narrow, row
from .settings_form import SettingsForm

#: The "propagate with" choice that uses the prompt model itself.
PROMPT_MODEL = "the prompt model"


class PropagationPanel:
    """The Propagate button, its options and its worker.

    Args:
        session: the viewer's model session.
        image: returns the image layer (or None).
        previewed: returns ``(plane index, (H, W) mask)`` of the single previewed object, or None.
        labels: the dock's :class:`~napari_sam.widgets.labels_target.LabelsTarget`.
        done: called after a successful write (the dock clears its prompts).
        start_worker, show: start a worker counted as the dock's work; show a status message.
    """

    def __init__(self, session, image, previewed, labels, done, start_worker, show):
        self.session, self.image, self.previewed, self.labels, self.done = session, image, previewed, labels, done
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
        self.task = CancellableTask("Propagation", self.propagate_button, self.cancel_button, start_worker, show)
        body = column(self.video_model_picker, *self.settings.widgets, self.correct_object, labels=True)
        self.options = Fold("Propagation options", body)
        self.widgets = [row(self.propagate_button, self.cancel_button), *self.options.widgets]
        self.propagate_button.changed.connect(self.propagate)
        self.propagated_id = None
        self._anchors: dict[int, int] = {}  # object id -> the plane it was first propagated from

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
        options = dict(contrast_limits=tuple(image.contrast_limits), rgb=image.rgb, directions=directions)
        video_name = self.video_model_picker.native.currentText().strip()
        session = self.session

        def work(report, cancelled):
            if not video_name or video_name == PROMPT_MODEL:
                return propagate(predictor, volume, index[axis], 0, first, settings, progress=report,
                                 cancel=cancelled, **options)
            model, geometry = session.video_model(video_name, predictor.device)
            return propagate_video(model, volume, index[axis], 0, mask=first, geometry=geometry, settings=settings,
                                   progress=report, cancel=cancelled, **options)

        self.task.run(work, lambda result: self._commit(image, index, axis, result, target, directions))

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
