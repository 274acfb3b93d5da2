"""The "Segment everything" dock widget: every object of the shown plane (or of every plane) as a new Labels layer.

The generator runs on a worker thread with a napari progress bar and a Cancel button. The Labels layer is added
only when a run finishes, with the image's transforms and a features table (label, area, score, stability,
box; its ``index`` column maps rows to label values, as napari expects); a cancelled or failed run adds nothing.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, FloatSpinBox, PushButton, SpinBox
from napari.utils.notifications import show_info

from ..bridge.slicing import current_plane
from ..core.automatic_mask_generator import segment_everything
from .model_widget import ModelWidget
from .prompt_layers import image_transforms

#: (name, widget class, default, min, max, step, tooltip) of every generator setting.
SETTINGS = [
    ("points_per_side", SpinBox, 32, 1, 128, 1,
     "Grid of one-point prompts: points_per_side² per crop. More finds smaller objects, slower."),
    ("points_per_batch", SpinBox, 64, 1, 1024, 8,
     "Prompts decoded at once. Lower it to save memory; the result does not change."),
    ("pred_iou_thresh", FloatSpinBox, 0.88, -1.0, 1.0, 0.01,
     "Drop masks whose predicted IoU (the model's own quality estimate) is below this."),
    ("stability_score_thresh", FloatSpinBox, 0.95, 0.0, 1.0, 0.01,
     "Drop masks that change much when the logit threshold moves by the offset below."),
    ("stability_score_offset", FloatSpinBox, 1.0, 0.0, 10.0, 0.1,
     "How far the logit threshold moves to measure stability."),
    ("box_nms_thresh", FloatSpinBox, 0.7, 0.0, 1.0, 0.05,
     "Of two masks whose boxes overlap more than this (IoU), keep the better one."),
    ("crop_n_layers", SpinBox, 0, 0, 3, 1,
     "Extra layers of overlapping crops, each embedded again: finds small objects in large images, slower."),
    ("crop_nms_thresh", FloatSpinBox, 0.7, 0.0, 1.0, 0.05,
     "Box-overlap threshold for duplicates across crops (the mask from the smaller crop is kept)."),
    ("crop_overlap_ratio", FloatSpinBox, 512 / 1500, 0.0, 0.9, 0.05,
     "How much neighbouring crops overlap, as a fraction of the image's short side."),
    ("crop_n_points_downscale_factor", SpinBox, 1, 1, 8, 1,
     "Each crop layer's grid is divided by this factor per layer."),
    ("min_mask_region_area", SpinBox, 0, 0, 100000, 10,
     "Remove islands and fill holes smaller than this many pixels (0: off)."),
]


class EverythingWidget(ModelWidget):
    """Model and image pickers, every generator setting, Run and Cancel."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.settings = {}
        for name, kind, default, low, high, step, tooltip in SETTINGS:
            widget = kind(label=name.replace("_", " "), value=default, min=low, max=high, step=step,
                          tooltip=tooltip)
            self.settings[name] = widget
            self.append(widget)
        self.whole_stack = CheckBox(text="every plane of a stack", value=False,
                                    tooltip="Segment every 2D plane of an nD image, not only the shown one.")
        self.run_button = PushButton(text="Segment everything")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.extend([self.whole_stack, self.run_button, self.cancel_button])
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.result_layer = None
        self._cancel = threading.Event()

    def model_ready(self) -> None:
        self._show(self.status.value + " Ready to segment everything.")

    def values(self) -> dict:
        """The generator settings as keyword arguments."""
        return {name: widget.value for name, widget in self.settings.items()}

    def cancel(self) -> None:
        self._cancel.set()

    def run(self) -> None:
        """Segment the shown plane (or every plane) on a worker; adds a Labels layer when it finishes."""
        image, predictor = self.image_picker.value, self.predictor
        if image is None or predictor is None:
            show_info("Choose an image and load a model first.")
            return
        plane, index = current_plane(image, self.viewer.dims.point)
        data = image.data[0] if image.multiscale else image.data
        leading = data.shape[: len(index)]
        if self.whole_stack.value and index:
            indices = list(np.ndindex(*leading))
        else:
            indices = [index]
        settings, limits, rgb = self.values(), tuple(image.contrast_limits), image.rgb

        def work(report):
            planes = []
            for number, plane_index in enumerate(indices):
                plane_data = np.asarray(data[plane_index]) if plane_index else plane

                def plane_report(done, total, number=number):
                    report(number * total + done, len(indices) * total)

                planes.append(segment_everything(predictor, plane_data, contrast_limits=limits, rgb=rgb,
                                                 progress=plane_report, cancel=self._cancel.is_set, **settings))
            return indices, planes

        self.run_cancellable(work, "Segment everything", lambda result: self._add_layer(image, data.shape, result),
                             self.run_button, self.cancel_button, self._cancel)

    def _add_layer(self, image, shape, result) -> None:
        indices, planes = result
        spatial = shape[:-1] if image.rgb else shape
        labels = np.zeros(spatial, dtype=np.uint32)
        rows, offset = [], 0
        for plane_index, found in zip(indices, planes):
            plane_labels = np.where(found.labels > 0, found.labels + offset, 0).astype(np.uint32)
            labels[plane_index] = plane_labels
            areas = found.masks.sum(axis=(1, 2))
            for k in range(len(found.masks)):
                row = {"index": offset + k + 1, "label": offset + k + 1, "area": int(areas[k]),
                       "score": float(found.scores[k]), "stability": float(found.stability_scores[k])}
                row.update(dict(zip(("box_row_min", "box_col_min", "box_row_max", "box_col_max"),
                                    found.boxes[k].tolist())))
                if plane_index:
                    row["plane"] = plane_index
                rows.append(row)
            offset += len(found.masks)
        self.result_layer = self.viewer.add_labels(labels, name=f"{image.name} everything",
                                                   features=pd.DataFrame(rows), **image_transforms(image))
        self._show(f"Found {offset} objects.")
