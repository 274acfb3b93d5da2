"""The image and model part of every napari-sam dock: choose an image and a checkpoint, load it, keep the shown
plane embedded.

The model itself belongs to the viewer's :class:`~napari_sam.widgets.session.ModelSession`, shared by every dock:
loading in one dock loads it for all of them. Loading and embedding run on worker threads; a failure shows a
napari notification and leaves the dock usable.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, PushButton, SpinBox, create_widget
from napari.layers import Image
from napari.utils.notifications import show_error
from psygnal import Signal
from qtpy.QtCore import Qt, QTimer

from ..bridge.slicing import current_index, leading_shape, plane_shape, plane_view, visible_region
from ..core.model import DEFAULT_CHECKPOINT, DEVICES, KNOWN_CHECKPOINTS, PRECISIONS
from .layout import Fold, column, narrow, narrow_spin, row, status_line
from .session import session_for
from .tiles_and_store import TilesAndStore

#: How long the view must rest after a pan or zoom before the tiles that came into view are embedded.
CAMERA_REST_MS = 300


def _plane(index: tuple[int, ...]) -> str:
    """", plane 3" (or ", plane (1, 3)") for a plane of a stack; "" for a 2D image."""
    if not index:
        return ""
    return f", plane {index[0]}" if len(index) == 1 else f", plane {index}"


class ModelPanel:
    """Image picker, checkpoint picker with its Load button, device/precision/cache options, and a status line.

    ``widgets`` go into a dock. Signals: ``ready()`` once the session has a model (loaded by any dock).

    Attributes:
        session: the viewer's model session.
        embedded_index: (layer name, plane index) of the newest finished embedding, or None.
    """

    ready = Signal()

    def __init__(self, viewer):
        self.viewer = viewer
        self.session = session_for(viewer)
        self.embedded_index = None
        self.closed = False

        self.image_picker = create_widget(annotation=Image, label="image")
        narrow(self.image_picker)
        self.model_picker = ComboBox(label="model", choices=list(KNOWN_CHECKPOINTS), value=DEFAULT_CHECKPOINT,
                                     tooltip="A known checkpoint, or type a hub id or the path of a saved folder.")
        self.model_picker.native.setEditable(True)
        for index, description in enumerate(KNOWN_CHECKPOINTS.values()):
            self.model_picker.native.setItemData(index, description, Qt.ItemDataRole.ToolTipRole)
        if self.session.predictor is not None:  # another dock of this viewer loaded it
            self.model_picker.native.setCurrentText(self.session.name)
        narrow(self.model_picker)
        self.load_button = PushButton(text="Load", tooltip="Load the checkpoint for every napari-sam dock.")
        self.device_picker = ComboBox(label="device", choices=DEVICES, value="auto",
                                      tooltip="auto: CUDA GPU, then Apple MPS, then CPU.")
        self.precision_picker = ComboBox(
            label="precision", choices=PRECISIONS, value="auto",
            tooltip="Weights and products in bfloat16 run 2-3x faster on CPUs with AMX or AVX-512 BF16 and on "
                    "recent GPUs, with masks nearly identical to float32's. auto: bfloat16 where that is so.")
        self.cache_megabytes = SpinBox(label="cache (MB)", value=self.session.cache_bytes >> 20, min=16,
                                       max=1 << 20, step=64,
                                       tooltip="Memory for the embeddings of recently shown planes; the least "
                                               "recently used ones are dropped beyond it.")
        narrow_spin(self.cache_megabytes)
        self.status = status_line("No model loaded." if self.session.predictor is None else
                                  f"Loaded {self.session.name}.")
        self.tiles_and_store = TilesAndStore(self.session)
        self.options = Fold("Device, memory, tiles", column(self.device_picker, self.precision_picker,
                                                            self.cache_megabytes, *self.tiles_and_store.widgets,
                                                            labels=True))
        self.container = Container(widgets=[column(self.image_picker),
                                            row(self.model_picker, self.load_button, labels=False),
                                            *self.options.widgets, self.status], labels=False)
        self.container.margins = (0, 0, 0, 0)

        self.load_button.changed.connect(self.load_model)
        self.cache_megabytes.changed.connect(lambda value: self.session.set_cache_budget(value))
        self.image_picker.changed.connect(self.embed_current_plane)
        self.session.loading.connect(self._on_loading)
        self.session.loaded.connect(self._on_loaded)
        self.session.failed.connect(self._on_failed)
        self.session.embedded.connect(self._on_embedded)
        viewer.dims.events.current_step.connect(self.embed_current_plane)
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        self._camera_timer = QTimer(self.container.native)  # goes with the dock's widgets: never stopped by hand
        self._camera_timer.setSingleShot(True)
        self._camera_timer.setInterval(CAMERA_REST_MS)
        self._camera_timer.timeout.connect(self._embed_if_tiled)
        viewer.camera.events.center.connect(self._on_camera)
        viewer.camera.events.zoom.connect(self._on_camera)

    def close(self) -> None:
        """Stop listening to the viewer and the session (the dock is gone)."""
        self.closed = True
        self.viewer.dims.events.current_step.disconnect(self.embed_current_plane)
        self.viewer.layers.events.inserted.disconnect(self._refresh_layers)
        self.viewer.layers.events.removed.disconnect(self._refresh_layers)
        self.viewer.camera.events.center.disconnect(self._on_camera)
        self.viewer.camera.events.zoom.disconnect(self._on_camera)
        for signal, slot in ((self.session.loading, self._on_loading), (self.session.loaded, self._on_loaded),
                             (self.session.failed, self._on_failed), (self.session.embedded, self._on_embedded)):
            signal.disconnect(slot)

    @property
    def widgets(self) -> list:
        return [self.container]

    @property
    def predictor(self):
        return self.session.predictor

    @property
    def model_name(self) -> str:
        """The checkpoint typed or chosen in the model field."""
        return self.model_picker.native.currentText().strip()

    def show(self, message: str) -> None:
        if not self.closed:
            self.status.value = message

    def _refresh_layers(self, event=None) -> None:
        self.image_picker.reset_choices()

    def load_model(self) -> None:
        """Load the chosen checkpoint for the viewer's session, on a worker."""
        self.session.load(self.model_name, self.device_picker.value, self.precision_picker.value)

    def _on_loading(self, name: str) -> None:
        self.load_button.enabled = False
        self.show(f"Loading {name} ...")

    def _on_loaded(self, predictor) -> None:
        self.load_button.enabled = True
        if self.model_picker.native.currentText().strip() != self.session.name:
            self.model_picker.native.setCurrentText(self.session.name)
        self.show(f"Loaded {self.session.name} on {predictor.device} "
                  f"({str(predictor.dtype).removeprefix('torch.')}).")
        self.tiles_and_store.describe_store()
        self.ready.emit()
        self.embed_current_plane()

    def _on_failed(self, message: str) -> None:
        self.load_button.enabled = True
        if self.session.predictor is not None:  # the picker names the model in use, not the one that failed
            self.model_picker.native.setCurrentText(self.session.name)
            self.show(f"Could not load the model; {self.session.name} is still loaded.")
        else:
            self.show("Could not load the model.")
        if not self.closed:
            show_error(message)

    def embed_current_plane(self, event=None) -> None:
        """Embed the shown plane of the chosen image (a cached embedding returns at once; on a large plane seen in
        tiles, the tiles around the view), then prefetch the planes before and after it along the last leading
        axis."""
        layer = self.image_picker.value
        if self.closed or layer is None or self.session.predictor is None:
            return
        index = current_index(layer, self.viewer.dims.point)
        neighbours = []
        if index:
            depth = leading_shape(layer)[-1]
            neighbours = [index[:-1] + (z,) for z in (index[-1] + 1, index[-1] - 1) if 0 <= z < depth]
        self.show(f"Embedding {layer.name}{_plane(index)} ...")

        def failed(error: Exception) -> None:
            self.show(f"Could not embed {layer.name}.")
            show_error(f"Could not embed {layer.name!r}: {error}")

        self.session.embed(self, layer, index, lambda: plane_view(layer, index), failed, visible_region(layer),
                           prefetch=[(n, lambda n=n: plane_view(layer, n)) for n in neighbours])

    def _on_camera(self, event=None) -> None:
        """The view moved: embed the tiles that came into view, once it rests."""
        self._camera_timer.start()

    def _embed_if_tiled(self) -> None:
        predictor, layer = self.session.predictor, self.image_picker.value
        if self.closed or predictor is None or layer is None:
            return
        try:
            tiled = predictor.sees_in_tiles(plane_shape(layer))
        except ValueError:  # tiling options that do not fit this model: said when they were set and when used
            return
        if tiled:
            self.embed_current_plane()

    def _on_embedded(self, layer, index, ran_encoder: bool | None) -> None:
        if layer is not self.image_picker.value or self.closed:
            return
        self.embedded_index = (layer.name, index)
        if ran_encoder is None:
            self.show(f"Ready: {layer.name}{_plane(index)}: a large image, seen in tiles; each tile is embedded when "
                      "a prompt needs it, and those in view once you zoom in.")
        else:
            self.show(f"Ready: {layer.name}{_plane(index)}" + ("" if ran_encoder else " (cached)"))
