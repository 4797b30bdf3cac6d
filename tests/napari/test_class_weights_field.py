"""The Train tab's class-weights tick box: off in the presets, greyed out where the loss
has no cross-entropy, and a run started from the tab with it ticked weighs its classes."""

from __future__ import annotations

import pytest
import torch

from napari_numsnet.config import TrainConfig
from napari_numsnet.engine import class_weights as class_weights_module
from napari_numsnet.presets import PRESETS

pytestmark = pytest.mark.gui


def test_the_box_follows_the_preset_and_reaches_the_settings(panel):
    _, widget = panel
    tab = widget.train_tab
    assert tab.advanced_form.labelForField(tab.class_weights).text() == "Class weights"
    for name in PRESETS:
        tab.preset.setCurrentText(name)
        assert not tab.class_weights.isChecked()
        assert widget.training.settings.training.class_weights == "none"
    tab.preset.setCurrentText("fast")  # Dice + cross-entropy: the box can be ticked
    assert tab.class_weights.isEnabled()
    tab.class_weights.setChecked(True)
    assert widget.training.settings.training.class_weights == "frequency"
    tab.class_weights.setChecked(False)
    assert widget.training.settings.training.class_weights == "none"
    tab.class_weights.setChecked(True)
    tab.preset.setCurrentText("paper")  # BCE/2 + Dice: nothing to weigh
    assert not tab.class_weights.isEnabled()
    assert widget.training.settings.training.class_weights == "none"


def test_a_run_from_the_tab_with_the_box_ticked_weighs_the_classes(
    panel, qtbot, monkeypatch, tiny_slice_run
):
    _, widget = panel
    tab = widget.train_tab
    weights: list[torch.Tensor | None] = []
    original = class_weights_module.class_weights_for

    def spy(*args, **kwargs):
        weights.append(original(*args, **kwargs))
        return weights[-1]

    monkeypatch.setattr(class_weights_module, "class_weights_for", spy)
    training = TrainConfig(steps=3, batch_size=2, device="cpu", amp=False, loss="dice_ce")
    tiny_slice_run(widget, training)
    tab.class_weights.setChecked(True)
    tab._start(resume=False)
    qtbot.waitUntil(
        lambda: widget.training.checkpoint is not None and not widget.training.busy,
        timeout=60_000,
    )
    assert widget.training.checkpoint.train_config.class_weights == "frequency"
    assert weights and weights[-1] is not None
    # The background is the most frequent class (weight 1); the organs weigh more.
    assert float(weights[-1][0]) == pytest.approx(1.0)
    assert float(weights[-1][1:].max()) > 1.0
