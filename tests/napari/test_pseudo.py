"""Pseudo-labels tab: k-means on the sample CT in the background, accept a slice."""

from __future__ import annotations

import numpy as np
import pytest

from napari_numsnet.pseudolabel import KMeansConfig, kmeans_pseudolabels

pytestmark = pytest.mark.gui


def test_kmeans_layer_and_accepting_a_slice(panel, qtbot, errors):
    viewer, widget = panel
    tab = widget.pseudo_tab
    tab.k.setValue(2)
    tab.low.setValue(-1000)
    tab.high.setValue(300)
    tab.run_button.click()
    assert not tab.run_button.isEnabled()  # running in the background
    qtbot.waitUntil(lambda: not widget.pseudo.running, timeout=60_000)
    assert not errors
    layer = viewer.layers["ct pseudo-labels"]
    config = KMeansConfig(k=2, window=(-1000, 300))
    expected = kmeans_pseudolabels(viewer.layers["ct"].data, config)
    np.testing.assert_array_equal(layer.data, expected.labels)
    names = layer.metadata["numsnet"]["classes"]["names"]
    assert names == ["background", "lung", "ground-glass"]
    assert tab.notes.text().startswith("Window -1000 to 300 HU, air below -170.")
    assert tab.notes.toolTip() == "\n".join(widget.pseudo.result.notes)
    # Accept the slice with the most lung into a new layer with the pseudo-label classes.
    z = int(np.argmax((expected.labels > 0).sum(axis=(1, 2))))
    annotation = widget.pseudo.annotate_with_pseudo_classes()
    assert widget.annotation.classes.num_values == 3
    widget.annotation.go_to(z)
    assert tab.source.current_layer() is layer
    tab._accept()
    np.testing.assert_array_equal(annotation.data[z], expected.labels[z])
    assert widget.annotation.annotated == {z}


def test_self_learning_levels_each_get_a_layer(panel, qtbot, tiny_model, errors):
    viewer, widget = panel
    tiny_model(widget, epochs=1)
    levels = widget.levels_panel
    levels.levels.setValue(2)
    levels.steps.setValue(2)
    widget.pseudo_tab.k.setValue(2)
    widget.pseudo_tab.write_settings()
    shown = []
    levels.controller.level_done.connect(shown.append)
    levels.run_button.click()
    assert levels.stop_button.isEnabled() and not levels.run_button.isEnabled()
    qtbot.waitUntil(lambda: not levels.controller.running, timeout=120_000)
    assert not errors
    result = levels.controller.result
    assert [lv.level for lv in shown] == [lv.level for lv in result.levels]
    assert result.levels[0].level == 0 and len(result.levels) >= 2
    # The panel's steps per level take effect (the Train tab's recipe counts epochs here).
    assert result.levels[1].checkpoint.record["steps_done"] == 2
    # The Train tab's loss (BCE/2 + Dice) has no cross-entropy to weigh: the notes say so.
    assert any("not weighted" in note for note in result.notes)
    for level in result.levels[1:]:
        name = f"ct level {level.level}" + (" (collapsed)" if level.collapsed else "")
        np.testing.assert_array_equal(viewer.layers[name].data, level.labels)
    assert levels.status.text() == " ".join(result.notes)
    assert levels.run_button.isEnabled()
