"""The Segment concept (SAM3) dock: text and exemplars, the preview, commits with scores, undo."""

import numpy as np

from helpers import make_image


def test_the_concept_dock_previews_commits_with_scores_and_undoes(make_napari_viewer, qtbot, concept_checkpoint,
                                                                   notifications):
    image, _, _ = make_image("gray_uint16", (70, 90), seed=9)
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, name="cells")
    _, dock = viewer.window.add_plugin_dock_widget("napari-sam", "Segment concept (SAM3)")
    dock.model_picker.native.setCurrentText(str(concept_checkpoint))
    dock.load_model()
    qtbot.waitUntil(lambda: dock.predictor is not None and not dock.busy, timeout=60_000)
    dock.find()  # no text, no exemplars: says what to do, nothing runs
    assert any("Type what to find" in str(n.message) for n in notifications())
    dock.text.value = "nucleus"
    dock.threshold.value = 0.0
    dock.find()
    qtbot.waitUntil(lambda: dock.found is not None and not dock.busy, timeout=60_000)
    count = len(dock.found[2].objects)
    assert count >= 3 and int(dock.preview_layer.data.max()) >= 1
    assert viewer.layers.selection.active is layer  # the preview did not take the selection
    dock.commit()
    labels = dock.labels.value
    assert labels is not None and len(np.unique(labels.data[labels.data > 0])) >= 1
    assert set(labels.features["index"]) == set(np.unique(labels.data[labels.data > 0]))
    assert labels.features["concept_score"].between(0, 1).all()
    assert int(dock.preview_layer.data.max()) == 0
    labels.undo()
    assert int(labels.data.max()) == 0  # one undo step takes the whole commit back


def test_exemplars_drawn_with_alt_are_counter_examples(make_napari_viewer, qtbot, concept_checkpoint):
    image, _, _ = make_image("gray_uint8", (70, 90), seed=10)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    _, dock = viewer.window.add_plugin_dock_widget("napari-sam", "Segment concept (SAM3)")
    dock.draw_exemplars()
    shapes = dock.exemplars_picker.value
    assert viewer.layers.selection.active is shapes and shapes.mode == "add_rectangle"
    shapes.add_rectangles([[10, 10], [30, 40]])
    dock._alt = True
    shapes.add_rectangles([[40, 50], [60, 80]])
    dock._alt = False
    assert shapes.features["positive"].tolist() == [True, False]
    shapes.selected_data = {0}
    dock.flip_selected(shapes)
    from napari_sam.bridge.layer_prompts import read_exemplars

    boxes, labels = read_exemplars(shapes, viewer.layers["cells"], ())
    assert labels.tolist() == [0, 0] and boxes.tolist()[0] == [10, 10, 30, 40]


def test_the_prompt_dock_points_a_concept_checkpoint_to_the_concept_dock(make_napari_viewer, qtbot, concept_checkpoint,
                                                                          notifications):
    viewer = make_napari_viewer()
    image = viewer.add_image(make_image("gray_uint8", (70, 90))[0], name="cells")
    _, dock = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    dock.model_picker.native.setCurrentText(str(concept_checkpoint))
    dock.load_model()
    qtbot.waitUntil(lambda: dock.predictor is not None and not dock.busy, timeout=60_000)
    points = dock.points_picker.value
    points.add([[30, 40]])
    qtbot.waitUntil(lambda: any("Segment concept (SAM3) dock" in str(n.message) for n in notifications()),
                    timeout=10_000)
    assert not any("Prediction failed" in str(n.message) for n in notifications())
    assert image in viewer.layers
