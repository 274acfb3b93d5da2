"""How a viewer's model sees large images (tiling) and where it keeps embeddings on disk (the store): options of
the model panel, applied to the viewer's session and to every model it loads."""

from __future__ import annotations

from magicgui.widgets import CheckBox, FileEdit, FloatSpinBox
from napari.utils.notifications import show_error

from ..core.settings import TilingSettings
from .layout import column, narrow_spin, status_line
from .settings_form import SettingsForm


class TilesAndStore:
    """The tiling settings and the embedding store of a session; ``widgets`` go into a dock."""

    def __init__(self, session):
        self.session = session
        self.tiling = SettingsForm(TilingSettings)
        self.tiling.show(session.tiling)
        self.use_store = CheckBox(text="keep embeddings on disk", value=session.store_folder is not None,
                                  tooltip="Embeddings are kept in a store on disk and reused after napari restarts "
                                          "and by `napari-sam embed`; each entry is checked before use.")
        self.store_folder = FileEdit(label="store", mode="d", value=session.store_folder or "",
                                     tooltip="The store's folder (empty: the per-user cache folder).")
        self.store_gb = FloatSpinBox(label="store (GB)", value=session.store_gb, min=0.1, max=100000, step=1,
                                     tooltip="The store's size cap: the least recently used embeddings go beyond it.")
        narrow_spin(self.store_gb)
        self.store_status = status_line()
        self.widgets = [*self.tiling.widgets, column(self.use_store, self.store_folder, self.store_gb),
                        self.store_status]
        self.tiling.edited.connect(self._tiling_edited)
        for widget in (self.use_store, self.store_folder, self.store_gb):
            widget.changed.connect(self._store_edited)
        self.describe_store()

    def _tiling_edited(self) -> None:
        settings = self.tiling.checked("tiling options")
        predictor = self.session.predictor
        if settings is not None and predictor is not None:
            try:  # a halo may be too large only for the loaded model's tile (0: its own)
                settings.resolved(predictor.geometry.default_tile)
            except ValueError as error:
                show_error(f"Invalid tiling options: {error}")
                return
        if settings is not None:
            self.session.set_tiling(settings)

    def _store_edited(self, *args) -> None:
        folder = str(self.store_folder.value).strip()
        folder = None if not self.use_store.value else (folder if folder not in ("", ".") else "")
        try:
            self.session.set_store(folder, self.store_gb.value)
        except (ValueError, PermissionError) as error:
            show_error(f"Cannot keep embeddings there: {error}")
            self.use_store.value = False
        self.describe_store()

    def describe_store(self) -> None:
        """Say what the store holds for the loaded model, and for others."""
        store, predictor = self.session.store, self.session.predictor
        if store is None:
            self.store_status.value = "Embeddings are kept in memory only."
            return
        models = store.summary()["models"]  # unreadable entries count under None
        mine = sum(v["entries"] for k, v in models.items() if predictor is not None and k is not None
                   and k.startswith(_label(predictor.checkpoint) + "#"))
        others = sum(v["entries"] for v in models.values()) - mine
        self.store_status.value = f"Store: {mine} embeddings of this model, {others} of others."
        self.store_status.tooltip = str(store.root)


def _label(checkpoint: str) -> str:
    import os

    return os.path.basename(os.path.normpath(checkpoint)) or checkpoint
