"""Export batch run: the Segment everything dock's settings, as a settings file and the ``napari-sam segment``
command line that runs them on a folder (the model, its precision, tiling and the image's contrast as the dock
uses them)."""

from __future__ import annotations

from pathlib import Path

import torch
from magicgui.widgets import PushButton
from napari.utils.notifications import show_info

from ..batch.config import BatchSettings, RunConfig


def contrast_rule(layer) -> str:
    """``napari`` when the layer shows the limits napari gave it (its data range), else its limits as LOW,HIGH."""
    low, high = (float(v) for v in layer.contrast_limits)
    unchanged = (low, high) == tuple(float(v) for v in layer.contrast_limits_range)
    return "napari" if unchanged else f"{low:g},{high:g}"


def source_folder(layer) -> Path | None:
    """The folder of the file the layer was opened from, or None."""
    path = getattr(getattr(layer, "source", None), "path", None)
    return Path(path).parent if path else None


class BatchExport:
    """The "Export batch run..." button of a dock with a settings form (``dock.form``) for segment everything."""

    def __init__(self, dock):
        self.dock = dock
        self.button = PushButton(text="Export batch run...", tooltip="Save these settings as a settings file for "
                                 "'napari-sam segment' and copy the command that runs them on a folder.")
        self.button.changed.connect(self.export)
        self.command = ""

    def config(self) -> RunConfig | None:
        """The run these settings describe, or None (with a message) before a model is loaded or with invalid
        settings."""
        dock, predictor, image = self.dock, self.dock.predictor, self.dock.image_picker.value
        if predictor is None or image is None:
            show_info("Choose an image and load a model first: the batch run uses them.")
            return None
        settings = dock.form.checked("settings")
        if settings is None:
            return None
        batch = BatchSettings(model=dock.session.name, contrast=contrast_rule(image),
                              precision="bfloat16" if predictor.dtype == torch.bfloat16 else "float32")
        return RunConfig(batch=batch, everything=settings, tiling=predictor.tiling)

    def save(self, path: str | Path, config: RunConfig, layer=None) -> str:
        """Write the settings file and return the command that runs it: on the folder of the image's file, into a
        sibling folder; else on IMAGES/ into RESULTS/."""
        path = config.save(path)
        folder = source_folder(layer) if layer is not None else None
        inputs, output = ((str(folder), str(folder.with_name(folder.name + "-segmented"))) if folder
                          else ("IMAGES/", "RESULTS/"))
        return config.command_line([inputs], output, str(path))

    def export(self) -> None:
        from qtpy.QtWidgets import QApplication, QFileDialog

        config = self.config()
        if config is None:
            return
        image = self.dock.image_picker.value
        start = source_folder(image) or Path.home()
        path, _ = QFileDialog.getSaveFileName(self.dock.native, "Save the batch settings",
                                              str(start / f"{image.name}-settings.json"), "JSON (*.json)")
        if not path:
            return
        self.command = self.save(path, config, image)
        QApplication.clipboard().setText(self.command)
        self.dock.model.show(f"Saved {Path(path).name}; the command is copied: {self.command}")
        show_info(f"Copied the command that runs these settings on a folder: {self.command}")
