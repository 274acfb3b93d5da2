"""What every napari-sam dock has: the model panel bound to the viewer's shared session, and its own workers."""

from __future__ import annotations

from magicgui.widgets import Container

from .model_panel import ModelPanel


class Dock(Container):
    """A dock widget of one napari viewer: the model panel first, then the dock's own parts.

    Attributes:
        viewer: the napari viewer; model: the :class:`ModelPanel`; session: the viewer's model session.
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.model = ModelPanel(napari_viewer)
        self.session = self.model.session
        self._workers: set = set()
        self.native.destroyed.connect(self._on_destroyed)

    # the parts users and tests reach through any dock
    image_picker = property(lambda self: self.model.image_picker)
    model_picker = property(lambda self: self.model.model_picker)
    load_button = property(lambda self: self.model.load_button)
    status = property(lambda self: self.model.status)
    predictor = property(lambda self: self.session.predictor)
    embedded_index = property(lambda self: self.model.embedded_index)

    @property
    def busy(self) -> bool:
        """Whether work of this dock, or a model load or embedding of the session, is running."""
        return bool(self._workers) or self.session.busy

    def load_model(self) -> None:
        self.model.load_model()

    def start_worker(self, worker) -> None:
        """Start a napari worker as this dock's work (counted in :attr:`busy`)."""
        self._workers.add(worker)
        worker.finished.connect(lambda: self._workers.discard(worker))
        self.session.start(worker)

    def _on_destroyed(self, *args) -> None:
        self.model.close()
        self.closing()

    def closing(self) -> None:
        """The dock is going away: stop listening to the viewer (override)."""
