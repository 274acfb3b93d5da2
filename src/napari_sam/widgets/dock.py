"""What every napari-sam dock has: the model panel bound to the viewer's shared session, and its own workers."""

from __future__ import annotations

from magicgui.widgets import Container
from qtpy.QtCore import QEvent, QObject

from .model_panel import ModelPanel


class Undocking(QObject):
    """Calls ``undocked()`` when the watched widget loses its parent: napari's ``remove_dock_widget`` keeps the
    widget alive, parentless, so a removed dock would otherwise go on listening to its viewer."""

    def __init__(self, undocked):
        super().__init__()
        self.undocked = undocked

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.ParentChange and watched.parent() is None:
            self.undocked()
        return False


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
        self._closed = False
        self.native.destroyed.connect(self._on_destroyed)
        self._undocking = Undocking(self._on_destroyed)
        self.native.installEventFilter(self._undocking)

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

    def start_worker(self, worker, cancel=None) -> None:
        """Start a napari worker as this dock's work (counted in :attr:`busy`); ``cancel`` (a threading.Event) is
        set when the session stops."""
        self._workers.add(worker)
        worker.finished.connect(lambda: self._workers.discard(worker))
        self.session.start(worker, cancel)

    def _on_destroyed(self, *args) -> None:
        """The dock was removed from its viewer, or deleted: it stops listening to the viewer (once)."""
        if self._closed:
            return
        self._closed = True
        self.model.close()
        self.closing()

    def closing(self) -> None:
        """The dock is going away: stop listening to the viewer (override)."""
