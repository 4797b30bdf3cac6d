"""The plugin never loses or misplaces work: hidden layers, re-opening, a new layer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def test_accept_works_with_the_annotation_layer_hidden(panel, errors):
    _, widget = panel
    annotation = widget.annotation
    layer = annotation.new_labels_layer()
    layer.visible = False  # the natural state while looking at the prediction
    source = np.zeros(layer.data.shape, np.uint8)
    source[3, 10:20, 10:20] = 1
    annotation.accept_slice(source, 3)
    np.testing.assert_array_equal(layer.data[3], source[3])
    assert 3 in annotation.annotated
    source[5, 0:5, 0:5] = 1
    annotation.go_to(5)
    widget.prediction.accept(source=SimpleNamespace(data=source))  # the current slice
    assert 5 in annotation.annotated and layer.data[5].sum() == 25
    folder = annotation.save()
    assert folder is not None
    saved = annotation.workspace.load_annotations(layer.data.shape)
    assert saved.annotated == [3, 5] and saved.labels[3].sum() == 100


def test_opening_the_image_again_adds_no_second_annotation_layer(panel, ct_path, qtbot):
    viewer, widget = panel
    annotation = widget.annotation
    layer = annotation.new_labels_layer()
    layer.data[2, 5:9, 5:9] = 1
    annotation.mark(2)
    annotation.save()
    viewer.open(ct_path, plugin="napari-numsnet")
    qtbot.wait(50)
    labels = [lyr for lyr in viewer.layers if lyr.__class__.__name__ == "Labels"]
    roles = [lyr.metadata.get("numsnet", {}).get("role") for lyr in labels]
    assert roles.count("annotations") == 1, roles


def test_a_new_annotation_layer_keeps_the_saved_work(panel):
    _, widget = panel
    annotation = widget.annotation
    layer = annotation.new_labels_layer()
    layer.data[2, 5:9, 5:9] = 1
    annotation.mark(2)
    annotation.save()
    annotation.new_labels_layer()
    annotation.save()  # what the autosave would do 1.5 s later
    kept = [p for p in annotation.workspace.folder.iterdir() if p.name.startswith("kept-")]
    assert kept, "the earlier annotations were not kept"
    from napari_numsnet.workspace import Workspace

    old = Workspace(kept[0].parent, annotation.workspace.meta)._read_save(kept[0], None)
    assert old.annotated == [2] and old.labels[2].sum() == 16


def test_predicting_again_keeps_corrections_that_were_not_accepted(panel):
    from napari_numsnet._napari.prediction import PredictSettings

    viewer, widget = panel
    image = viewer.layers["ct"]
    controller = widget.prediction
    labels = np.zeros(image.data.shape, np.uint8)
    first = SimpleNamespace(labels=labels, probabilities=None)
    classes = widget.annotation.classes
    controller._on_returned(first, image, classes, PredictSettings())
    layer = controller.prediction_layer(image)
    corrected = np.array(layer.data, copy=True)
    corrected[4, 10:20, 10:20] = 1
    layer.data = corrected  # the user corrects a slice and predicts again before accepting
    second = SimpleNamespace(labels=labels + 2, probabilities=None)
    controller._on_returned(second, image, classes, PredictSettings())
    new = controller.prediction_layer(image)
    assert new is not layer and np.all(new.data == 2)
    np.testing.assert_array_equal(layer.data, corrected)  # the corrections are kept
    assert layer.metadata["numsnet"]["role"] == "corrections"
    # Without corrections the prediction layer is simply updated.
    controller._on_returned(first, image, classes, PredictSettings())
    assert controller.prediction_layer(image) is new and not new.data.any()
