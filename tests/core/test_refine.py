"""Refining existing objects (core, no Qt): every object's box, and optionally its mask, as the prompt."""

import dataclasses

import numpy as np

from napari_sam import Predictor, refine_objects
from napari_sam.core.objects import mask_iou
from napari_sam.core.settings import RefineSettings
from napari_sam.demo import synthetic_cells


def rough_labels(labels: np.ndarray) -> np.ndarray:
    """Each cell's label grown into a rough rectangle-ish blob: the kind of outline a refinement should fix."""
    rough = np.zeros_like(labels)
    for cell in range(1, int(labels.max()) + 1):
        rows, cols = np.nonzero(labels == cell)
        if len(rows) < 30:
            continue
        r0, r1 = rows.min() + 2, rows.max() - 2
        c0, c1 = cols.min() + 2, cols.max() - 2
        rough[r0:r1, c0:c1][rough[r0:r1, c0:c1] == 0] = cell
    return rough


def test_refined_objects_follow_the_cells_and_settings_default_to_the_checkpoints(tiny_cells):
    image, labels = synthetic_cells((256, 256), seed=940_001)
    rough = rough_labels(labels)
    result = refine_objects(tiny_cells, image, rough)
    ids = [cell for cell in np.unique(rough)[1:]]
    assert sorted(o.object_id for o in result.objects) == ids and not result.kept
    refined = result.labels()
    assert np.median([mask_iou(refined == cell, labels == cell) for cell in ids]) >= 0.85
    assert np.median([mask_iou(rough == cell, labels == cell) for cell in ids]) < 0.8  # the refinement did the work
    recommended = refine_objects(tiny_cells, image, rough, tiny_cells.recommended.refine)
    assert np.array_equal(recommended.labels(), refined)
    other = dataclasses.replace(tiny_cells.recommended, refine=RefineSettings(use_mask_input=True))
    masked = refine_objects(Predictor(tiny_cells.model, tiny_cells.geometry, tiny_cells.device, recommended=other),
                            image, rough)
    assert np.array_equal(masked.labels(), refine_objects(tiny_cells, image, rough, use_mask_input=True).labels())
    assert not np.array_equal(masked.labels(), refined)


def test_objects_of_a_tiled_image_are_refined_where_they_are(tiny_cells):
    """On an image seen in tiles (tiny-cells tiles images over 256 px), a batch of objects may be decoded in a
    window larger than its tile: each refined object is placed by the frame it was decoded in (once 42 of the demo
    sample's 66 objects landed outside the image and painting them raised IndexError)."""
    image, labels = synthetic_cells((384, 512), seed=2024)  # the demo sample
    assert tiny_cells.sees_in_tiles(image.shape)
    rough = rough_labels(labels)
    result = refine_objects(tiny_cells, image, rough)
    refined = result.labels()
    ids = [cell for cell in np.unique(rough)[1:]]
    assert sorted(o.object_id for o in result.objects) == ids
    assert all(o.rows.stop <= 384 and o.cols.stop <= 512 for o in result.objects)
    assert np.median([mask_iou(refined == cell, labels == cell) for cell in ids]) >= 0.85
