"""The "Image series" dock: the images of a folder (or a batch run's output folder) annotated one by one.

The dock lists the images with their status and object counts; Next and Previous (buttons, ``PageDown`` and
``PageUp``) and a double click move between them, and *Mark done* finishes one. Each image opens with its labels
from the output folder, in the "Segment Anything" dock beside it, where prompts, preview, commit, refine,
propagation and segment everything work as on any image. The next image is read and embedded ahead on a worker, so
moving on shows a ready image.

Labels are saved atomically (:class:`~napari_sam.batch.series.Series`): after each finished edit (a commit, a
brush stroke, an undo or redo), when leaving an image, and when the dock closes. A file that cannot be read is
marked failed, with its error, and skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, Container, LineEdit, PushButton
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QListWidget

from ..batch.config import RunConfig
from ..batch.series import DONE, FAILED, IN_PROGRESS, Series
from ..core.image import is_rgb, napari_contrast_limits
from .dock import Undocking
from .layout import column, row, status_line
from .prompt_layers import labels_array, unwrapped
from .segment_widget import SegmentWidget

#: Images up to this size are read into memory when opened (larger ones stay lazy, read as napari shows them).
IN_MEMORY_BYTES = 512 << 20
#: After an undo or redo (which napari reports only as a redraw), how long to wait before saving, in milliseconds.
SAVE_DELAY_MS = 150
#: The keys that move through the series (on the viewer, whatever layer is active).
KEYS = {"PageDown": "next", "PageUp": "previous"}


def _marker(status: str) -> str:
    return {DONE: "✓", FAILED: "✗", IN_PROGRESS: "…"}.get(status, " ")


def _read(series: Series, index: int):
    """The image at ``index`` as the dock shows it (in memory when small), and its contrast limits."""
    data = series.open_image(index)
    shape = tuple(int(n) for n in data.shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(data.dtype).itemsize
    if nbytes <= IN_MEMORY_BYTES:
        data = np.asarray(data[...])
    rgb = is_rgb(shape)
    return data, rgb, napari_contrast_limits(data, rgb, in_memory=isinstance(data, np.ndarray))


def _objects(count: int) -> str:
    return f"{count} object" + ("" if count == 1 else "s")


def _shown_path(path: Path) -> str:
    """``path`` as the dock shows it: relative to the working folder when it lies inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class SeriesWidget(Container):
    """The series dock of one viewer: the folder to open, the list of images, moving through them.

    Attributes:
        series: the open :class:`~napari_sam.batch.series.Series`, or None.
        current: the index of the image shown, or None.
        shown_seconds: how long the last move took, from leaving the image shown to showing the next one.
        segment: the "Segment Anything" dock the images are annotated in (opened with the series).
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.series: Series | None = None
        self.current: int | None = None
        self.segment = None
        self.image_layer = self.labels_layer = None
        self._ahead: tuple[int, object] | None = None  # (index, (data, rgb, limits)) read ahead
        self._saved_version: tuple | None = None
        self.shown_seconds: float | None = None
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._save_if_changed)
        self.inputs = LineEdit(label="images", tooltip="Image files, folders or globs, separated by ';' (as "
                                                       "napari-sam segment takes them).")
        self.out = LineEdit(label="out", tooltip="The output folder: labels and tables are saved there, as a batch "
                                                 "run writes them. A batch run's output folder opens as it is.")
        self.stack = CheckBox(text="each folder is one stack", value=False)
        self.open_button = PushButton(text="Open the series")
        self.previous_button = PushButton(text="◀ Previous (PgUp)")
        self.next_button = PushButton(text="Next (PgDn) ▶")
        self.done_button = PushButton(text="Mark done", tooltip="This image is finished: mark it done and go on to "
                                                                "the next one not done.")
        self.status = status_line("Choose the images and an output folder, then open the series.")
        self.list = QListWidget()
        self.list.setMinimumHeight(160)
        self.extend([column(self.inputs, self.out), self.stack, self.open_button,
                     row(self.previous_button, self.next_button), self.done_button, self.status])
        self.native.layout().addWidget(self.list)
        self.open_button.changed.connect(self._open_from_fields)
        self.previous_button.changed.connect(self.previous)
        self.next_button.changed.connect(self.next)
        self.done_button.changed.connect(self.mark_done)
        self.list.itemDoubleClicked.connect(lambda item: self.go(self.list.row(item)))
        for key, method in KEYS.items():
            self.viewer.bind_key(key, lambda _viewer, method=method: getattr(self, method)(), overwrite=True)
        self.native.destroyed.connect(lambda *args: self.close_series(closing=True))
        self._undocking = Undocking(lambda: self.close_series(closing=True))  # removed from the viewer: let go
        self.native.installEventFilter(self._undocking)

    # --- opening ------------------------------------------------------------------------------------------------

    def _open_from_fields(self) -> None:
        specs = [spec.strip() for spec in self.inputs.value.split(";") if spec.strip()]
        if not specs or not self.out.value.strip():
            show_info("Name the images (files, folders or globs) and an output folder.")
            return
        try:
            series = Series(specs, self.out.value.strip(), stack=self.stack.value)
        except ValueError as error:
            show_error(str(error))
            return
        self.start(series)

    def start(self, series: Series, model: str | None = None) -> None:
        """Annotate ``series`` here (the dock takes it over and closes it with itself), with the checkpoint
        ``model`` (None: the series', else the one its batch run used, else the one loaded, else the dock's
        default), from its first image not done."""
        self.close_series()
        self.series = series
        self.inputs.value, self.out.value = "; ".join(series.inputs), _shown_path(series.out)
        _, segment = self.viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
        if not isinstance(segment, SegmentWidget):
            raise TypeError("the Segment Anything dock could not be opened")
        self.segment = segment
        segment.session.series = series
        predictor = segment.session.predictor
        wanted = model or series.model or next((image.model for image in series.images if image.model), None)
        if wanted and (predictor is None or predictor.checkpoint != wanted):
            segment.model_picker.native.setCurrentText(wanted)
            segment.load_model()
        elif predictor is None:
            segment.load_model()
        segment.session.embedded.connect(self._on_embedded)
        segment.model.ready.connect(self._apply_settings)
        if predictor is not None:
            self._apply_settings()
        self.refresh_list()
        self.go(series.first_to_do())

    def _apply_settings(self) -> None:
        """The series' settings (a settings file, ``--settings``) in the Segment Anything dock: its tiling, and
        its propagation settings over the ones the checkpoint recommends."""
        series, segment = self.series, self.segment
        if series is None or segment is None or not series.settings:
            return
        config = RunConfig.from_dict(series.settings)
        segment.model.tiles_and_store.tiling.show(config.tiling)
        segment.session.set_tiling(config.tiling)
        if config.propagation is not None:
            segment.propagation.settings.show(config.propagation)

    # --- moving through the series ----------------------------------------------------------------------------

    def refresh_list(self) -> None:
        """Show every image's status and object count, and describe the one shown."""
        if self.series is None:
            return
        self._describe()
        self.list.clear()
        for image in self.series.images:
            count = "" if image.objects is None else f" · {_objects(image.objects)}"
            corrected = " · corrected" if image.corrected else ""
            self.list.addItem(f"{_marker(image.status)} {image.name} · {image.status}{count}{corrected}")
            if image.error:
                self.list.item(self.list.count() - 1).setToolTip(image.error)
        if self.current is not None:
            self.list.setCurrentRow(self.current)

    def next(self) -> None:
        if self.series is not None and self.current is not None:
            self._step(+1)

    def previous(self) -> None:
        if self.series is not None and self.current is not None:
            self._step(-1)

    def _step(self, step: int) -> None:
        """Go to the next readable image in the direction ``step`` (failed ones are skipped)."""
        assert self.series is not None and self.current is not None
        index = self.current + step
        while 0 <= index < len(self.series) and self.series.images[index].status == FAILED:
            index += step
        if 0 <= index < len(self.series):
            self.go(index)
        else:
            self.status.value = "This is the " + ("last" if step > 0 else "first") + " image of the series."

    def mark_done(self) -> None:
        """Mark the shown image done (saving it), and go to the next image not done."""
        if self.series is None or self.current is None:
            return
        self.save()
        self.series.set_status(self.current, DONE)
        remaining = [i for i, image in enumerate(self.series.images) if image.status not in (DONE, FAILED)]
        self.refresh_list()
        if not remaining:
            self.status.value = f"All {len(self.series)} images are done (or failed)."
            return
        later = [i for i in remaining if i > self.current]
        self.go(later[0] if later else remaining[0])

    def go(self, index: int) -> None:
        """Show the image at ``index`` with its labels (saving the one shown first); an unreadable one is marked
        failed and the next readable one is shown instead."""
        series = self.series
        if series is None or not 0 <= index < len(series):
            return
        started = time.perf_counter()
        if self.current is not None:
            self._timer.stop()
            self.save()
        try:
            data, rgb, limits = self._ahead[1] if self._ahead and self._ahead[0] == index else _read(series, index)
        except ValueError as error:
            self._ahead = None
            show_error(f"{series.images[index].name}: {error}")
            self.refresh_list()
            following = next((i for i in range(index + 1, len(series)) if series.images[i].status != FAILED), None)
            if following is not None:
                self.go(following)
            return
        self._ahead = None
        series.visit(index)
        image = series.images[index]
        try:
            labels = series.labels(index)
        except ValueError as error:
            show_error(f"{image.name}: {error}; its labels start empty (the file is kept until saved over).")
            labels = None
        spatial = tuple(int(n) for n in (data.shape[:-1] if rgb else data.shape))
        if labels is not None and tuple(labels.shape) != spatial:
            show_error(f"{image.name}: its labels are {tuple(labels.shape)}, the image {spatial}; they start "
                       "empty (the file is kept until saved over).")
            labels = None
        if labels is None or not isinstance(labels, np.ndarray):  # a zarr file is read, never edited in place
            saved, labels = labels, labels_array(spatial, f"{image.name} labels")[0]
            if saved is not None:
                for plane in np.ndindex(*spatial[:-2]):
                    labels[plane] = np.asarray(saved[plane])
        segment = self.segment
        if not self._swap_in(image.name, data, rgb, limits, labels):
            self.leave()
            viewer = self.viewer
            self.image_layer = unwrapped(viewer.add_image(data, name=image.name, rgb=rgb, contrast_limits=limits))
            self.labels_layer = unwrapped(viewer.add_labels(labels, name=f"{image.name} labels"))
            segment.image_picker.value = self.image_layer
            segment.labels_picker.reset_choices()
            segment.labels_picker.value = self.labels_layer
            layers = viewer.layers  # the labels just above the image, below the prompts; the points take the clicks
            layers.move(layers.index(self.labels_layer), layers.index(self.image_layer) + 1)
            if segment.session.predictor is not None:
                segment.ensure_prompt_layers()
            self.labels_layer.events.paint.connect(self._on_paint)
            self.labels_layer.events.set_data.connect(self._on_redraw)
        self.current = index
        self._saved_version = self._version()
        self.shown_seconds = time.perf_counter() - started  # from leaving the last image to showing this one
        self.refresh_list()

    def _describe(self) -> None:
        """Say which image is shown, how far it is and how many objects it has."""
        if self.series is None or self.current is None:
            return
        image = self.series.images[self.current]
        self.status.value = (f"{self.current + 1} of {len(self.series)}: {image.name} ({image.status}"
                             + (f", {_objects(image.objects)}" if image.objects is not None else "") + ").")

    def _swap_in(self, name: str, data, rgb: bool, limits, labels) -> bool:
        """Show the next image in the layers already shown, when it has as many dimensions (and colour) as the
        last one: napari adds and removes layers slowly (a garbage collection for each removal). The prompts drawn
        on the last image are cleared, the labels' undo history starts anew. Returns False when new layers are
        needed."""
        image_layer, labels_layer, segment = self.image_layer, self.labels_layer, self.segment
        layers = self.viewer.layers
        if (image_layer is None or labels_layer is None or image_layer not in layers or labels_layer not in layers
                or bool(image_layer.rgb) != bool(rgb) or image_layer.data.ndim != len(data.shape)):
            return False
        segment.preview_control.drop_layer()
        points, shapes, brush = (segment.points_picker.value, segment.shapes_picker.value,
                                 segment.brush_picker.value)
        if points is not None and len(points.data):
            points.data = np.zeros((0, points.ndim))
        if shapes is not None and len(shapes.data):
            shapes.selected_data = set(range(len(shapes.data)))
            shapes.remove_selected()
        if brush is not None:
            brush.data = labels_array(tuple(labels.shape), f"{name} scribbles", np.uint8)[0]
        image_layer.contrast_limits_range = limits
        image_layer.data = data
        image_layer.contrast_limits = limits
        image_layer.name = name
        labels_layer.data = labels
        labels_layer._undo_history.clear()  # napari keeps the history across a data change: not across images
        labels_layer._redo_history.clear()
        labels_layer.name = f"{name} labels"
        for picker, layer in ((segment.image_picker, image_layer), (segment.labels_picker, labels_layer)):
            if picker.value is not layer:  # a renamed layer may have left its picker
                picker.reset_choices()
                picker.value = layer
        segment.image_replaced()
        return True

    def leave(self) -> None:
        """Save the shown image and take its layers (and the prompts drawn on it) out of the viewer."""
        if self.current is None:
            return
        self._timer.stop()
        self.save()
        layers = self.viewer.layers
        segment = self.segment
        prompt_layers = []
        if segment is not None:  # the prompts drawn on this image go with it; the next image gets new layers
            segment.preview_control.drop_layer()
            pickers = (segment.points_picker, segment.shapes_picker, segment.brush_picker)
            prompt_layers = [picker.value for picker in pickers]
            for picker in pickers:
                picker.value = None
        if self.image_layer in layers:
            layers.selection.active = self.image_layer  # not a prompt layer that goes
        for layer in (*prompt_layers, self.labels_layer, self.image_layer):
            if layer is not None and layer in layers:
                layers.remove(layer)
        QApplication.processEvents()  # the canvas lets the removed layers go before the next image's come
        self.image_layer = self.labels_layer = None
        self.current = None

    # --- saving -------------------------------------------------------------------------------------------------

    def _version(self) -> tuple:
        layer = self.labels_layer
        return (id(layer), len(layer._undo_history), len(layer._redo_history)) if layer is not None else ()

    def _on_paint(self, event=None) -> None:
        """A finished edit (a commit, a stroke, a fill): saved at once. napari reports an edit made outside a
        grouped write (a single paint or fill) before it writes it, so such an edit is saved again once written."""
        self.save()
        layer = self.labels_layer
        if layer is not None and not getattr(layer, "_block_history", True):
            QTimer.singleShot(0, lambda: self.save(force=True))

    def _on_redraw(self, event=None) -> None:
        """A redraw, after an undo or redo among others: saved if the labels' history moved."""
        if self._version() != self._saved_version:
            self._timer.start(SAVE_DELAY_MS)

    def _save_if_changed(self) -> None:
        if self._version() != self._saved_version:
            self.save()

    def save(self, force: bool = False) -> None:
        """Save the shown image's labels now, if they changed since they were saved or opened (``force``: in any
        case)."""
        series, layer = self.series, self.labels_layer
        if series is None or self.current is None or layer is None:
            return
        if self._version() == self._saved_version and not force:
            return
        predictor = None if self.segment is None else self.segment.session.predictor
        try:
            series.save(self.current, layer.data, model=getattr(predictor, "checkpoint", None))
        except (OSError, ValueError) as error:
            show_error(f"Could not save the labels of {series.images[self.current].name}: {error}")
            return
        self._saved_version = self._version()
        self.refresh_list()

    # --- reading and embedding ahead ----------------------------------------------------------------------------

    def _on_embedded(self, layer, index, ran_encoder) -> None:
        """The shown image is ready: read the next one and embed it ahead, on a worker."""
        series, segment = self.series, self.segment
        if series is None or self.current is None or unwrapped(layer) is not self.image_layer or segment is None:
            return
        following = next((i for i in range(self.current + 1, len(series))
                          if series.images[i].status != FAILED), None)
        predictor = segment.session.predictor
        if following is None or predictor is None or (self._ahead and self._ahead[0] == following):
            return

        def work():
            read = _read(series, following)
            data, rgb, limits = read
            plane = data[(0,) * (data.ndim - (3 if rgb else 2))] if data.ndim > (3 if rgb else 2) else data
            predictor.prefetch([np.asarray(plane)], limits, rgb)
            return following, read

        def read_ahead(result) -> None:
            if self.series is series:
                self._ahead = result

        segment.start_worker(create_worker(work, _start_thread=False,
                                           _connect={"returned": read_ahead, "errored": lambda error: None}))

    # --- closing ------------------------------------------------------------------------------------------------

    def close_series(self, closing: bool = False) -> None:
        """Save the shown image and let the output folder go (``closing``: the viewer is going away, its layers
        are left to it)."""
        if getattr(self, "series", None) is None:  # none open, or the widget is being torn down
            return
        if closing:
            try:
                self._timer.stop()
            except RuntimeError:  # Qt deleted the timer with the dock already
                pass
            self.save()
            self.current = None
        else:
            self.leave()
        if self.segment is not None:
            if self.segment.session.series is self.series:
                self.segment.session.series = None
            for signal, slot in ((self.segment.session.embedded, self._on_embedded),
                                 (self.segment.model.ready, self._apply_settings)):
                try:
                    signal.disconnect(slot)
                except (TypeError, ValueError, RuntimeError):
                    pass
        if closing:
            for key in KEYS:  # the viewer's keys go back to napari
                try:
                    self.viewer.bind_key(key, None)
                except (KeyError, RuntimeError):
                    pass
        self.series.close()
        self.series, self._ahead = None, None


def open_series(viewer, inputs, out, model: str | None = None, **options) -> SeriesWidget:
    """Open the images ``inputs`` (files, folders, globs, as ``napari-sam segment`` takes them) as a series saved
    into ``out``, in an "Image series" dock of ``viewer`` (with the Segment Anything dock beside it); returns the
    dock. ``options`` go to :class:`~napari_sam.batch.series.Series` (``stack``, ``settings``, ``break_lock``,
    ``channel``).

    Raises:
        ValueError: bad inputs or output folder, or a folder another session holds.
    """
    series = Series(list(inputs) if not isinstance(inputs, str) else [inputs], out, model=model, **options)
    try:
        _, dock = viewer.window.add_plugin_dock_widget("napari-sam", "Image series")
        dock.start(series, model)
    except Exception:
        series.close()
        raise
    return dock
