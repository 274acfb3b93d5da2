"""The bundled tiny-cells on held-out synthetic microscopy of several looks
(``napari_sam.testing.synthetic_microscopy``, seeds training never draws), through the public API: clicks and boxes
per look, segment everything with Meta's own thresholds on the demo sample, and propagation with the previous slice's
mask as a prompt.

The scenes are seeded: the bounds sit about 0.05 under what the bundled model gives on them (the model card's table has
the figures over more scenes), so that a model or a pipeline that got worse fails them.
"""

import numpy as np
import pytest

from napari_sam import segment_everything
from napari_sam.core.settings import EverythingSettings
from napari_sam.demo import synthetic_cells_sample
from napari_sam.testing.held_out import matched, scene_figures, stack_figures
from napari_sam.testing.synthetic_microscopy import with_overrides

#: look: (click median IoU, box median IoU) bounds on two held-out 512² scenes
BOUNDS = {
    "nuclei": (0.82, 0.84),
    "crowded": (0.67, 0.79),
    "large": (0.55, 0.85),  # 18 objects of 35-120 px; a click inside a large one may give only part of it
    "cytoplasm": (0.79, 0.86),
}
#: the same on one scene
SLOW_BOUNDS = {
    "textured": (0.82, 0.85),
    "uneven": (0.75, 0.8),
    "phase": (0.72, 0.82),
    "defocus": (0.6, 0.72),
    "mitotic": (0.7, 0.77),
    "irregular": (0.83, 0.85),
}


def check_look(tiny_cells, look, bounds, scenes=2):
    figures = scene_figures(tiny_cells, look, scenes, np.random.default_rng(7), everything=False)
    assert figures["objects"] >= 7 * scenes, figures
    assert figures["click_median_iou"] >= bounds[0], figures
    assert figures["box_median_iou"] >= bounds[1], figures


@pytest.mark.parametrize("look", list(BOUNDS))
def test_clicks_and_boxes_per_look(tiny_cells, look):
    check_look(tiny_cells, look, BOUNDS[look])


@pytest.mark.slow
@pytest.mark.parametrize("look", list(SLOW_BOUNDS))
def test_clicks_and_boxes_on_the_other_looks(tiny_cells, look):
    check_look(tiny_cells, look, SLOW_BOUNDS[look], scenes=1)


@pytest.mark.parametrize("thresholds", ["metas", "recommended", "instance head"])
def test_segment_everything_finds_the_demo_cells(tiny_cells, thresholds):
    """Predicted IoUs and stability mean what they say. Meta's 0.88 / 0.95, with the checkpoint's clean-up of
    regions under 30 px, keep 61 of the demo sample's 66 cells in 63 segments (tiny-cells v1 kept none, and this
    model before its logits were scaled 2x, 38); the recommended 0.75 / 0.92 keep nearly all of them, and few
    segments that are no cell. The instance head (the recommended method) too."""
    from napari_sam.demo import synthetic_cells

    image = synthetic_cells_sample()[0][0]
    _, labels = synthetic_cells((384, 512), seed=2024)
    recommended = tiny_cells.recommended.everything
    settings = {"metas": EverythingSettings(min_mask_region_area=recommended.min_mask_region_area),
                "recommended": recommended.replace(method="grid"), "instance head": recommended}[thresholds]
    assert recommended.min_mask_region_area > 0
    result = segment_everything(tiny_cells, image, settings)
    objects, found, segments, matching = matched(labels, np.asarray(result.labels))
    assert found >= (0.85 if thresholds == "metas" else 0.9) * objects, (objects, found, segments, matching)
    assert matching >= 0.85 * segments, (objects, found, segments, matching)


def test_the_previous_mask_as_a_prompt_tracks_at_least_as_well(tiny_cells):
    """Trained with mask prompts: propagating with the previous slice's logits as ``mask_input`` is no worse than
    without (and both follow the nuclei)."""
    figures = stack_figures(tiny_cells, with_overrides("nuclei", diameter=(20.0, 60.0)), 1, np.random.default_rng(3),
                            objects_per_stack=6)
    assert figures["median_3d_iou_mask_input"] >= figures["median_3d_iou_without_mask_input"] - 0.02, figures
    assert figures["median_3d_iou_mask_input"] >= 0.75, figures
