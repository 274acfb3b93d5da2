"""The model part of the "Segment Anything" widget: choose an image and a SAM checkpoint, load it, embed.

Model loading and image embedding run on worker threads (``napari.qt.threading``); the viewer stays
responsive. Results of a request that a newer one superseded are dropped. Failures show a napari notification and
leave the widget usable.
"""

from __future__ import annotations

import numpy as np

from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox, create_widget
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from ..bridge.slicing import current_plane
from ..core.automatic_mask_generator import SegmentationCancelled
from ..core.model_loading import DEFAULT_CHECKPOINT, KNOWN_CHECKPOINTS
from ..core.predictor import Predictor

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "float32", "bfloat16")


class ModelWidget(Container):
    """Image, checkpoint and device pickers; loads the model and keeps the shown plane's embedding ready.

    Attributes:
        predictor: the loaded :class:`Predictor`, or None.
        embedded_index: the (layer name, slice index) whose embedding is current, or None.
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = viewer = napari_viewer
        self.predictor: Predictor | None = None
        self.embedded_index = None
        self._request = 0  # increases with every embedding request; older results are dropped
        self._workers: set = set()
        self._closed = False

        self.image_picker = create_widget(annotation=Image, label="image")
        self.model_picker = ComboBox(label="model", choices=list(KNOWN_CHECKPOINTS), value=DEFAULT_CHECKPOINT,
                                     tooltip="A hub id (choose or type one) or the path of a saved folder.")
        self.model_picker.native.setEditable(True)
        self.device_picker = ComboBox(label="device", choices=DEVICES, value="auto",
                                      tooltip="auto: CUDA GPU, then Apple MPS, then CPU.")
        self.precision_picker = ComboBox(
            label="precision", choices=PRECISIONS, value="auto",
            tooltip="Weights and products in bfloat16 run 2-3x faster on CPUs with AMX or AVX-512 BF16 and on "
                    "recent GPUs, with masks nearly identical to float32's. auto: bfloat16 where that is so.")
        self.cache_megabytes = SpinBox(label="embedding cache (MB)", value=1024, min=16, max=1 << 20, step=64,
                                       tooltip="Memory for the embeddings of recently shown planes; the "
                                               "least recently used ones are dropped beyond it.")
        self.load_button = PushButton(text="Load model")
        self.status = Label(value="No model loaded.")
        self.extend([self.image_picker, self.model_picker, self.device_picker, self.precision_picker,
                     self.cache_megabytes, self.load_button, self.status])
        self.cache_megabytes.changed.connect(self._apply_cache_budget)

        self.load_button.changed.connect(self.load_model)
        self.image_picker.changed.connect(self.embed_current_plane)
        viewer.dims.events.current_step.connect(self.embed_current_plane)
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        self.native.destroyed.connect(self._on_destroyed)

    def _on_destroyed(self, *args) -> None:
        """Stop listening to the viewer and ignore results that arrive after the widget is gone."""
        self._closed = True
        self.viewer.dims.events.current_step.disconnect(self.embed_current_plane)
        self.viewer.layers.events.inserted.disconnect(self._refresh_layers)
        self.viewer.layers.events.removed.disconnect(self._refresh_layers)

    @property
    def busy(self) -> bool:
        """Whether a model load or an embedding is running."""
        return bool(self._workers)

    def _show(self, message: str) -> None:
        if not self._closed:
            self.status.value = message

    @property
    def model_name(self) -> str:
        """The checkpoint typed or chosen in the model field."""
        return self.model_picker.native.currentText().strip()

    def _refresh_layers(self, event=None) -> None:
        self.image_picker.reset_choices()

    def _start(self, worker) -> None:
        self._workers.add(worker)
        worker.finished.connect(lambda: self._workers.discard(worker))
        worker.start()

    def run_cancellable(self, work, description: str, on_result, run_button, cancel_button, cancel_event) -> None:
        """Run ``work(report)`` on a worker with a progress bar, ``cancel_button`` setting ``cancel_event``.

        ``work`` calls ``report(done, total)`` from its thread; a QTimer moves the bar on the UI thread.
        ``on_result`` gets the return value on the UI thread. Cancelling (``SegmentationCancelled``) or a failure
        is reported and changes nothing else.
        """
        cancel_event.clear()
        bar = progress(total=0, desc=description)
        counts = [0, 0]

        def report(done: int, total: int) -> None:
            counts[:] = [done, total]

        def move_bar() -> None:
            if counts[1] and bar.total != counts[1]:
                bar.total = counts[1]
            bar.n = counts[0]
            bar.refresh()

        timer = QTimer()
        timer.timeout.connect(move_bar)
        timer.start(100)
        run_button.enabled, cancel_button.enabled = False, True

        def finished() -> None:
            timer.stop()
            bar.close()
            if not self._closed:
                run_button.enabled, cancel_button.enabled = True, False

        def failed(error: Exception) -> None:
            if isinstance(error, SegmentationCancelled):
                self._show(f"{description} cancelled: nothing was changed.")
            else:
                self._show(f"{description} failed.")
                show_error(f"{description} failed: {error}")

        worker = create_worker(work, report, _start_thread=False,
                               _connect={"returned": on_result, "errored": failed, "finished": finished})
        self._start(worker)

    def load_model(self) -> None:
        """Load the chosen checkpoint on a worker thread; a failure shows a notification."""
        name, device = self.model_name, self.device_picker.value
        self.load_button.enabled = False
        self.status.value = f"Loading {name} ..."
        bar = progress(total=0, desc=f"Loading {name}")

        def loaded(predictor: Predictor) -> None:
            self.predictor = predictor
            self._show(f"Loaded {name} on {predictor.device} ({str(predictor.dtype).removeprefix('torch.')}).")
            self.model_ready()

        def failed(error: Exception) -> None:
            self._show(f"Could not load {name}.")
            show_error(str(error))

        def done() -> None:
            bar.close()
            if not self._closed:
                self.load_button.enabled = True

        worker = create_worker(Predictor.from_pretrained, name, device=device, dtype=self.precision_picker.value,
                               _start_thread=False,
                               _connect={"returned": loaded, "errored": failed, "finished": done})
        self._start(worker)

    def _apply_cache_budget(self, event=None) -> None:
        if self.predictor is not None:
            self.predictor.cache.max_bytes = int(self.cache_megabytes.value) << 20

    def model_ready(self) -> None:
        """Called on the UI thread once a model is loaded."""
        self._apply_cache_budget()
        self.embed_current_plane()

    def prefetch_neighbours(self, layer, index: tuple[int, ...]) -> None:
        """Embed the planes before and after the shown one (last leading axis) in the background."""
        predictor = self.predictor
        if not index or predictor is None or self._closed:
            return
        data = layer.data[0] if layer.multiscale else layer.data
        depth = data.shape[len(index) - 1]
        neighbours = [index[:-1] + (z,) for z in (index[-1] + 1, index[-1] - 1) if 0 <= z < depth]
        limits, rgb = tuple(layer.contrast_limits), layer.rgb

        def work():
            for neighbour in neighbours:
                predictor.precompute(np.asarray(data[neighbour]), contrast_limits=limits, rgb=rgb)

        self._start(create_worker(work, _start_thread=False,
                                  _connect={"errored": lambda error: None}))  # a failed prefetch costs nothing

    def embed_current_plane(self, event=None) -> None:
        """Embed the shown plane of the chosen image on a worker thread (a cached embedding returns at once)."""
        layer, predictor = self.image_picker.value, self.predictor
        if self._closed or layer is None or predictor is None:
            return
        plane, index = current_plane(layer, self.viewer.dims.point)
        self._request += 1
        request = self._request
        self._show(f"Embedding {layer.name} {index or ''} ...")
        bar = progress(total=0, desc="Embedding image")

        def embedded(ran_encoder: bool) -> None:
            if request != self._request:
                return  # a newer request superseded this one
            self.embedded_index = (layer.name, index)
            self._show(f"Ready: {layer.name} {index or ''}" + ("" if ran_encoder else " (cached)"))
            self.prefetch_neighbours(layer, index)

        def failed(error: Exception) -> None:
            if request == self._request:
                self._show(f"Could not embed {layer.name}.")
            show_error(f"Could not embed {layer.name!r}: {error}")

        worker = create_worker(predictor.set_image, plane, contrast_limits=tuple(layer.contrast_limits),
                               rgb=layer.rgb, _start_thread=False,
                               _connect={"returned": embedded, "errored": failed, "finished": bar.close})
        self._start(worker)

