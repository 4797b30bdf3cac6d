"""The Predict tab's "Largest piece only" list: one tick box per class, ticked to start
with where the model's validation slices chose it, applied on predict."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_numsnet import pipeline
from napari_numsnet.engine.events import TrainState
from napari_numsnet.engine.postprocess import keep_largest_component

pytestmark = pytest.mark.gui
MINUTE_MS = 60_000


def paint_slice(layer, z, plane):
    rows, cols = np.indices(plane.shape).reshape(2, -1)
    layer.data_setitem((np.full(rows.size, z), rows, cols), plane.ravel())


def count_pieces(mask: np.ndarray) -> int:
    """3D connected pieces of ``mask`` (26 neighbours, as the post-processing)."""
    return ndimage.label(mask, structure=np.ones((3, 3, 3)))[1]


def predict(widget, qtbot) -> np.ndarray:
    layers = []
    widget.prediction.predicted.connect(layers.append)
    widget.predict_tab.predict_button.click()
    qtbot.waitUntil(lambda: not widget.prediction.running, timeout=MINUTE_MS)
    widget.prediction.predicted.disconnect(layers.append)
    assert layers, "no prediction layer"
    return np.asarray(layers[-1].data).copy()


def test_ticked_classes_keep_only_their_largest_piece(panel, qtbot, tiny_model, errors, tmp_path):
    _viewer, widget = panel
    a, tab = widget.annotation, widget.predict_tab
    reference = pipeline.load_sample().labels
    widget.annotate_tab._load_classes(str(pipeline.sample_dir() / "ct_sample_classes.json"))
    widget.annotate_tab.buttons["New annotation layer"].click()
    for z in a.planned.tolist():
        a.go_to(z)
        paint_slice(a.labels, z, reference[z])
        widget.annotate_tab.buttons["Done ✓ and next"].click()
    assert not tab.largest.isEnabled() and tab.largest.count() == 0  # no model yet
    tiny_model(widget, epochs=2)
    widget.train_tab.train_button.click()
    qtbot.waitUntil(lambda: widget.training.state is not TrainState.TRAINING, timeout=MINUTE_MS)
    assert widget.training.state is TrainState.DONE, errors

    names = [tab.largest.item(row).text() for row in range(tab.largest.count())]
    assert names == widget.training.checkpoint.class_names[1:]  # the foreground classes
    assert tab.largest.isEnabled()
    # a new model comes with its own choice ticked: the classes for which it raised
    # the Dice of the validation slices when it was trained
    assert tab.largest_values() == widget.training.checkpoint.largest_component
    for row in range(tab.largest.count()):  # untick them all to see the raw prediction
        tab.largest.item(row).setCheckState(tab.largest.item(row).checkState().Unchecked)
    assert tab.largest_values() == ()
    raw = predict(widget, qtbot)

    # Tick the class the briefly trained model splits into the most pieces.
    pieces = {v: count_pieces(raw == v) for v in range(1, len(names) + 1)}
    value = max(pieces, key=pieces.get)
    assert pieces[value] > 1, f"every class is one piece at most ({pieces}): nothing to show"
    item = tab.largest.item(value - 1)
    item.setCheckState(item.checkState().Checked)
    assert tab.largest_values() == (value,)
    reduced = predict(widget, qtbot)
    assert widget.prediction.settings.config.largest_component == (value,)
    np.testing.assert_array_equal(reduced, keep_largest_component(raw, [value]))
    assert count_pieces(reduced == value) == 1
    untouched = raw != value  # the other classes stay as predicted
    np.testing.assert_array_equal(reduced[untouched], raw[untouched])
    tab.grab().save(str(tmp_path / "predict_tab.png"))
    assert not errors
