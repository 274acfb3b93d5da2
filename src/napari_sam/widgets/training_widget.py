"""The *Train* dock: fine-tune the viewer's model on the annotations in napari (Labels layers with their images) or
on the open image series, on a worker, with a live loss and validation curve and a Cancel that keeps the best state
so far; at the end, one click loads the new model into the viewer's session.

It calls :func:`napari_sam.core.workflows.training.finetune`, as ``napari-sam train`` does.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, LineEdit, PushButton, Select
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QPointF, QTimer
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

from ..batch.training_data import folder_examples
from ..core.errors import SegmentationCancelled
from ..core.settings import TrainingSettings
from ..core.workflows.training import AnnotatedImage, TrainingProgress, annotated_planes, finetune
from .layout import column, row, status_line
from .session import session_for
from .settings_form import SettingsForm

FROM_LAYERS, FROM_SERIES = "Labels layers", "the image series"
#: Layers napari-sam makes for its own use: never training data.
OWN_LAYERS = ("SAM preview", "SAM scribbles")


class TrainingCurve(QWidget):
    """The loss (grey, per step) and the validation score (green, at each validation) of a running training: what the
    latest progress reports (a few times a second) while it runs, every step once it has finished."""

    def __init__(self):
        super().__init__()
        self.losses: list[float] = []
        self.validations: list[tuple[int, float]] = []
        self.setMinimumHeight(110)

    def clear(self) -> None:
        self.losses, self.validations = [], []
        self.update()

    def add(self, update: TrainingProgress) -> None:
        if update.phase != "training" or update.loss is None:
            return
        while len(self.losses) < update.step:
            self.losses.append(update.loss)
        if update.validation is not None and (not self.validations or self.validations[-1][0] != update.step):
            self.validations.append((update.step, update.validation))
        self.update()

    def show_result(self, result) -> None:
        """Every step's loss and every validation of a finished training."""
        self.losses, self.validations = list(result.losses), list(result.validations)
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        width, height = self.width() - 8, self.height() - 22
        painter.setPen(QColor(150, 150, 150))
        painter.drawText(4, self.height() - 4, "loss (grey), validation IoU (green)")
        steps = max(len(self.losses), max((s for s, _ in self.validations), default=0), 1)

        def line(points: list[tuple[float, float]], low: float, high: float, colour: QColor) -> None:
            if len(points) < 2:
                return
            span = max(high - low, 1e-6)
            polygon = QPolygonF([QPointF(4 + width * x / steps, 4 + height * (1 - (y - low) / span))
                                 for x, y in points])
            painter.setPen(QPen(colour, 1.5))
            painter.drawPolyline(polygon)

        if self.losses:
            smooth = np.convolve(self.losses, np.ones(5) / 5, mode="valid") if len(self.losses) > 5 else self.losses
            line(list(enumerate(smooth, start=1)), float(np.min(smooth)), float(np.max(smooth)),
                 QColor(170, 170, 170))
        if self.validations:
            values = [v for _, v in self.validations]
            line([(float(s), v) for s, v in self.validations], min(values) - 0.01, max(values) + 0.01,
                 QColor(60, 200, 90))
        painter.end()


def _plane_shape(layer) -> tuple:
    return tuple(layer.data.shape[:-1] if getattr(layer, "rgb", False) else layer.data.shape)


class TrainWidget(Container):
    """Fine-tune the viewer's model on its annotations.

    Attributes:
        result: the last :class:`~napari_sam.core.workflows.training.TrainingResult`, or None.
        curve: the live loss and validation curve.
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.result = None
        self._latest: TrainingProgress | None = None
        self._cancel = threading.Event()
        self._worker = None
        self.source = ComboBox(label="train on", choices=[FROM_LAYERS, FROM_SERIES], value=FROM_LAYERS,
                               tooltip="Labels layers of this viewer (each with the image layer of its shape), or "
                                       "the images of the open Image series that were corrected or marked done.")
        self.layers = Select(label="labels", choices=self._labels_choices,
                             tooltip="The Labels layers to learn from (select several with Ctrl).")
        self.out = LineEdit(label="save to", value=str(self._default_out()),
                            tooltip="The folder the new checkpoint is written to (it must not exist).")
        self.allow_worse = CheckBox(text="save even if worse", value=False,
                                    tooltip="Save the model even when it validates worse than the base.")
        self.form = SettingsForm(TrainingSettings, "Training options")
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", tooltip="Stop training: the best state so far is measured "
                                                               "and saved.")
        self.cancel_button.enabled = False
        self.load_button = PushButton(text="Load the new model", tooltip="Load it into this viewer's session.")
        self.load_button.enabled = False
        self.status = status_line("Annotate objects in a Labels layer, choose it, then Train.")
        self.curve = TrainingCurve()
        self.extend([column(self.source, self.layers, self.out), *self.form.widgets, self.allow_worse,
                     row(self.train_button, self.cancel_button), self.status])
        self.native.layout().addWidget(self.curve)
        self.append(self.load_button)
        self.train_button.changed.connect(self.train)
        self.cancel_button.changed.connect(self._cancel.set)
        self.load_button.changed.connect(self.load_trained)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._timer = QTimer()
        self._timer.timeout.connect(self._show_progress)
        self.native.destroyed.connect(lambda *args: self._closed())

    def _labels_choices(self, _widget=None) -> list:
        return [layer.name for layer in self.viewer.layers
                if isinstance(layer, Labels) and layer.name not in OWN_LAYERS]

    def _refresh(self, event=None) -> None:
        self.layers.reset_choices()

    def _default_out(self) -> Path:
        base = Path(self.session.name or "tiny-cells").name or "model"
        return Path.home() / "napari-sam-models" / f"{base}-tuned-{datetime.now():%Y%m%d-%H%M}"

    def image_for(self, labels: Labels):
        """The image layer a Labels layer annotates: the first image layer of its shape (colour images by their
        plane's shape)."""
        shape = tuple(labels.data.shape)
        for layer in self.viewer.layers:
            if isinstance(layer, Image) and _plane_shape(layer) == shape:
                return layer
        return None

    def examples(self) -> list[AnnotatedImage]:
        """The annotated images chosen in the dock.

        Raises:
            ValueError: nothing chosen, no series open, or a Labels layer without an image of its shape.
        """
        if self.source.value == FROM_SERIES:
            series = getattr(self.session, "series", None)
            if series is None:
                raise ValueError("No image series is open in this viewer (Plugins > Image series).")
            return folder_examples(series.out, series.channel)
        chosen = [self.viewer.layers[name] for name in self.layers.value]
        if not chosen:
            raise ValueError("Choose the Labels layers to learn from.")
        out = []
        for labels in chosen:
            image = self.image_for(labels)
            if image is None:
                raise ValueError(f"The Labels layer {labels.name!r} ({'x'.join(map(str, labels.data.shape))}) has no "
                                 "image layer of its shape to learn from.")
            data = image.data[0] if image.multiscale else image.data
            out += annotated_planes(np.asarray(data), np.asarray(labels.data), labels.name,
                                    contrast_limits=tuple(image.contrast_limits), rgb=image.rgb)
        return out

    def train(self) -> None:
        """Start training on a worker (the session's model is the base; it is not changed)."""
        predictor = self.session.predictor
        if predictor is None:
            show_info("Load a model first (the Segment Anything dock): it is the base that is fine-tuned.")
            return
        settings = self.form.checked("training options")
        if settings is None:
            return
        try:
            examples = self.examples()
        except ValueError as error:
            show_error(str(error))
            return
        out = Path(self.out.value.strip()).expanduser()
        allow_worse = self.allow_worse.value
        self._cancel.clear()
        self.result, self._latest = None, None
        self.curve.clear()
        self.train_button.enabled, self.cancel_button.enabled, self.load_button.enabled = False, True, False
        self.status.value = f"Training on {len(examples)} image(s) or plane(s)..."
        started = time.monotonic()

        def progress(update: TrainingProgress) -> None:
            self._latest = update

        def work():
            return finetune(predictor, examples, out, settings, allow_worse=allow_worse, progress=progress,
                            cancel=self._cancel.is_set)

        def returned(result) -> None:
            self.result = result
            self.curve.show_result(result)
            self.load_button.enabled = True
            before, after = result.before, result.after
            self.status.value = (
                f"Saved {result.out.name} after {result.steps} steps ({time.monotonic() - started:.0f} s, "
                f"{result.stopped}). Click {before.click:.2f} → {after.click:.2f}, box {before.box:.2f} → "
                f"{after.box:.2f}, everything recall {before.recall:.2f} → {after.recall:.2f}.")

        def failed(error: Exception) -> None:
            if isinstance(error, SegmentationCancelled):
                self.status.value = "Training cancelled before its first step: nothing was saved."
                return
            self.status.value = "Training stopped: nothing was saved."
            show_error(f"Training failed: {error}")

        def finished() -> None:  # after returned or failed, whose status line stays
            self._timer.stop()
            if self._latest is not None:
                self.curve.add(self._latest)
            self.train_button.enabled, self.cancel_button.enabled = True, False

        worker = create_worker(work, _start_thread=False,
                               _connect={"returned": returned, "errored": failed, "finished": finished})
        self._worker = worker
        self._timer.start(200)
        self.session.start(worker, self._cancel)

    def _show_progress(self) -> None:
        update = self._latest
        if update is None:
            return
        self.curve.add(update)
        if update.phase == "training":
            best = f", best validation {update.best:.3f}" if update.best is not None else ""
            self.status.value = f"Step {update.step}: loss {update.loss:.3f}{best} ({update.elapsed:.0f} s)"
        elif update.phase == "embedding" and update.total:
            self.status.value = f"Embedding the images: {update.done}/{update.total}"
        else:
            self.status.value = f"{update.phase.capitalize()}..."

    def load_trained(self) -> None:
        """Load the model just trained into the viewer's session (every napari-sam dock then uses it)."""
        if self.result is None or self.result.out is None:
            return
        self.session.load(str(self.result.out))

    def _closed(self) -> None:
        """The dock is gone: a training in progress stops at its next step (and saves the best state so far)."""
        self._cancel.set()
        self._timer.stop()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self._refresh)

