"""Suggestions in the panel: the strip tinted by the score, "Next suggested" and its key."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.key_bindings import coerce_keybinding

from napari_numsnet import pipeline
from napari_numsnet.engine.events import TrainState

pytestmark = pytest.mark.gui
MINUTE_MS = 60_000


def paint_slice(layer, z, plane):
    rows, cols = np.indices(plane.shape).reshape(2, -1)
    layer.data_setitem((np.full(rows.size, z), rows, cols), plane.ravel())


def test_prediction_ranks_slices_in_the_strip_and_next_suggested_goes_there(
    panel, qtbot, tiny_model, errors
):
    viewer, widget = panel
    a, strip = widget.annotation, widget.annotate_tab.strip
    reference = pipeline.load_sample().labels
    widget.annotate_tab._load_classes(str(pipeline.sample_dir() / "ct_sample_classes.json"))
    widget.annotate_tab.buttons["New annotation layer"].click()
    planned = a.planned.tolist()
    for z in planned:
        a.go_to(z)
        paint_slice(a.labels, z, reference[z])
        widget.annotate_tab.buttons["Done ✓ and next"].click()
    tiny_model(widget, epochs=2)
    widget.train_tab.train_button.click()
    qtbot.waitUntil(lambda: widget.training.state is not TrainState.TRAINING, timeout=MINUTE_MS)
    assert widget.training.state is TrainState.DONE, errors
    assert not widget.predict_tab.suggest_button.isEnabled()  # nothing predicted yet

    widget.predict_tab.predict_button.click()
    qtbot.waitUntil(lambda: not widget.prediction.running, timeout=MINUTE_MS)
    suggestion = widget.prediction.suggestion
    assert suggestion is not None, errors
    ranked = suggestion.top()
    assert sorted(ranked) == sorted(set(range(len(reference))) - set(planned))
    # The probabilities were used for the ranking but not added as layers (not asked for).
    assert not any(" p(" in layer.name for layer in viewer.layers)
    # The strip: unannotated slices tinted by their score (the top one at 1), none done.
    assert set(strip.scores) == set(ranked) and strip.suggested == ranked[0]
    assert strip.scores[ranked[0]] == pytest.approx(1.0)
    assert all(0.0 <= v <= 1.0 for v in strip.scores.values())
    assert min(strip.scores.values()) == pytest.approx(0.0)  # the lowest score untinted
    low = min(strip.scores, key=strip.scores.get)
    empty = strip.COLORS["empty"]
    assert strip.tint(ranked[0], empty) == strip.COLORS["score"]
    assert strip.tint(low, empty) == empty

    # "Next suggested" goes to the top slice; after it is accepted, to the next one.
    assert widget.predict_tab.suggest_button.isEnabled()
    a.go_to(planned[0])
    widget.predict_tab.suggest_button.click()
    assert a.current_slice() == ranked[0]
    widget.predict_tab.accept_button.click()
    assert ranked[0] in a.annotated
    viewer.keymap[coerce_keybinding("Shift-S")](viewer)  # the shortcut
    assert a.current_slice() == ranked[1]
    assert "(Shift+S)" in widget.predict_tab.suggest_button.toolTip()
    assert not errors
