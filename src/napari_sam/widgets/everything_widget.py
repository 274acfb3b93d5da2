"""The "Segment everything" dock: every object of the shown plane (or of every plane) as a new Labels layer.

With every plane of a stack, "as 3D objects" links each plane's objects with those of the planes before it by
overlap (:func:`~napari_sam.core.workflows.link_stacks`), so that an object has one id through the planes it spans;
unticked, each plane's objects have ids of their own. The features table then has one row per 3D object.

The settings are generated from :class:`~napari_sam.core.settings.EverythingSettings`: the basic ones shown, the
advanced ones folded. Loading a checkpoint puts the settings it recommends into effect (the bundled tiny-cells
recommends its own; others get Meta's defaults), and a line says which settings are in effect. The generator runs
on a worker thread with a progress bar and a Cancel button; each plane is reduced to its labels and features as
soon as it is done. The Labels layer is added only when a run finds something, with the image's transforms and a
features table (label, area, score, stability, box; its ``index`` column maps rows to label values, as napari
expects); a run that finds nothing says why and what to lower, and a cancelled or failed run adds nothing.
"Export batch run..." saves the settings as a settings file for ``napari-sam segment`` and copies the command that
runs them on a folder.
"""

from __future__ import annotations

import pandas as pd
from magicgui.widgets import CheckBox, PushButton
from napari.utils.notifications import show_info

from ..bridge.slicing import plane_view, planes_to_run
from ..core.image import PlaneWriter
from ..core.settings import EverythingSettings
from ..core.workflows import explain_empty, link_stacks, segment_everything
from .batch_export import BatchExport
from .cancellable_task import CancellableTask, plane_progress
from .dock import Dock
from .layout import row, status_line
from .prompt_layers import image_transforms, labels_array, selection_kept, spatial_shape, unwrapped
from .settings_form import SettingsForm

#: What the dock's status line calls each method.
METHOD_NAMES = {"grid": "grid", "instances": "instances (its head)", "instances+sam": "instances+sam"}


class EverythingWidget(Dock):
    """Image and model, the generator's settings, Run and Cancel."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.form = SettingsForm(EverythingSettings, "Advanced settings")
        self.settings = self.form.controls
        self.recommended = EverythingSettings()
        self.source = "Meta's defaults"
        self.in_effect = status_line()
        self.reset_button = PushButton(text="Reset", tooltip="Back to the settings the loaded checkpoint recommends.")
        self.whole_stack = CheckBox(text="every plane of a stack", value=False,
                                    tooltip="Segment every 2D plane of an nD image, not only the shown one.")
        self.as_3d = CheckBox(text="as 3D objects", value=True,
                              tooltip="With every plane: link each plane's objects with the overlapping ones of the "
                                      "planes before it, so that an object keeps one id through the stack. "
                                      "Unticked: new ids on every plane.")
        self.run_button = PushButton(text="Segment everything")
        self.cancel_button = PushButton(text="Cancel")
        self.task = CancellableTask("Segment everything", self.run_button, self.cancel_button, self.start_worker,
                                    self.model.show)
        self.batch_export = BatchExport(self)
        self.extend([*self.model.widgets, *self.form.widgets, row(self.in_effect, self.reset_button),
                     self.whole_stack, self.as_3d, row(self.run_button, self.cancel_button),
                     self.batch_export.button])
        self.result_layer = None
        self._show_in_effect(edited=False)

        self.run_button.changed.connect(self.run)
        self.reset_button.changed.connect(self.reset_settings)
        self.form.edited.connect(lambda: self._show_in_effect(edited=True))
        self.model.ready.connect(self._model_ready)
        if self.session.predictor is not None:  # another dock of this viewer loaded a model already
            self._model_ready()

    def closing(self) -> None:
        self.task.close()

    def _model_ready(self) -> None:
        predictor = self.session.predictor
        self.recommended = predictor.recommended.everything
        source = predictor.recommended.source
        self.source = ("Meta's defaults" if source == "defaults" else f"the defaults of {source}"
                       if source.endswith("'s generator") else f"recommended by {self.session.name}")
        self.reset_settings()

    def reset_settings(self) -> None:
        """Put the loaded checkpoint's recommended settings (or Meta's defaults) into effect."""
        self.form.show(self.recommended)
        self._show_in_effect(edited=False)

    def _show_in_effect(self, edited: bool) -> None:
        method = self.settings["method"].value
        for name, control in self.settings.items():  # what the chosen method does not read is greyed out
            control.enabled = self.recommended.applies(name, method)
        self.in_effect.value = f"Settings: {'edited' if edited else self.source}; method: {METHOD_NAMES[method]}."
        self.in_effect.tooltip = "\n".join(f"{k}: {v}" for k, v in self.recommended.to_dict().items())

    def values(self) -> dict:
        """The settings in effect, as keyword arguments."""
        return self.form.value().to_dict()

    def cancel(self) -> None:
        self.task.cancelled.set()

    def run(self) -> None:
        """Segment the shown plane (or every plane) on a worker; adds a Labels layer when it finds objects."""
        image, predictor = self.image_picker.value, self.predictor
        if image is None or predictor is None:
            show_info("Choose an image and load a model first.")
            return
        settings = self.form.checked("settings")
        if settings is None:
            return
        if settings.method != "grid" and not predictor.has_head:
            show_info(f"{self.session.name} has no instance head, so the method '{settings.method}' cannot run: "
                      "train one in the Train dock (tick 'instance head') or with napari-sam train --instances, or "
                      "choose the method 'grid'.")
            return
        indices = planes_to_run(image, self.viewer.dims.point, self.whole_stack.value)
        link = self.whole_stack.value and self.as_3d.value and len(spatial_shape(image)) > 2
        limits, rgb = tuple(image.contrast_limits), image.rgb
        labels, folder = labels_array(spatial_shape(image), f"{image.name} everything")

        def work(report, cancelled):
            tables, stats, next_id = [], [], 1
            for number, plane_index in enumerate(indices):
                found = segment_everything(predictor, plane_view(image, plane_index), settings,
                                           contrast_limits=limits, rgb=rgb, out=PlaneWriter(labels, plane_index),
                                           first_id=next_id, progress=plane_progress(report, number, len(indices)),
                                           cancel=cancelled)
                table = pd.DataFrame(found.features())
                table["label"] += next_id - 1
                if plane_index:
                    table["plane"] = [plane_index] * len(table)
                tables.append(table)
                stats.append(found.stats)
                next_id += len(table)  # each plane is painted straight into the labels: no masks are kept
            if link and next_id > 1:
                mappings = link_stacks(labels, progress=report)  # the bar runs again while the planes are linked
                tables = [_as_3d(pd.concat(tables, ignore_index=True), mappings)]
            return tables, stats

        def finished(result) -> None:
            self._add_layer(image, labels, folder, *result, settings)

        self.task.run(work, finished, on_failure=lambda: _discard(folder))

    def _add_layer(self, image, labels, folder, tables, stats, settings) -> None:
        count = sum(len(table) for table in tables)
        if count == 0:
            _discard(folder)
            where = "on any plane" if len(tables) > 1 else "on this plane"
            message = f"Found no objects {where}. {explain_empty(stats[0], settings)}"
            self.model.show(message)
            show_info(message)
            return
        table = pd.concat(tables, ignore_index=True)
        table.insert(0, "index", table["label"])
        with selection_kept(self.viewer):  # the prompt layer stays active
            self.result_layer = unwrapped(self.viewer.add_labels(labels, name=f"{image.name} everything",
                                                                 features=table, **image_transforms(image)))
        where = f" (kept on disk in {folder})" if folder is not None else ""
        self.model.show(f"Found {count} objects{where}.")


def _as_3d(table: pd.DataFrame, mappings: list[dict[int, int]]) -> pd.DataFrame:
    """One row per 3D object from the planes' rows: the linked label, its total area, mean score and stability, its
    first and last plane and its box over all of them."""
    mapping = {old: new for part in mappings for old, new in part.items()}
    table = table.assign(label=table["label"].map(mapping))
    plane = table["plane"].map(lambda index: index[-1]) if "plane" in table else 0
    table = table.assign(plane=plane)
    grouped = table.groupby("label", sort=True)
    columns = {"label": grouped.size().index.to_numpy(), "area": grouped["area"].sum().to_numpy()}
    columns |= {name: grouped[name].mean().to_numpy() for name in ("score", "stability")}
    columns |= {"first_plane": grouped["plane"].min().to_numpy(), "last_plane": grouped["plane"].max().to_numpy()}
    columns |= {name: grouped[name].min().to_numpy() for name in ("box_row_min", "box_col_min")}
    columns |= {name: grouped[name].max().to_numpy() for name in ("box_row_max", "box_col_max")}
    return pd.DataFrame(columns)


def _discard(folder) -> None:
    """Remove the on-disk labels of a run that added no layer."""
    if folder is not None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
