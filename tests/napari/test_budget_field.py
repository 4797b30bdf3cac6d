"""The Train tab's budget: steps for presets that count steps, epochs for the paper's."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def test_steps_field_takes_effect_and_auto_keeps_the_preset_rule(panel):
    _, widget = panel
    tab = widget.train_tab
    tab.preset.setCurrentText("fast")
    training = widget.training.settings.training
    assert tab.steps.isEnabled() and not tab.epochs.isEnabled()
    assert tab.steps.value() == 0 and tab.steps.text() == "auto"
    assert (training.steps, training.steps_per_slice, training.min_steps) == (6000, 150, 400)
    tab.steps.setValue(700)
    training = widget.training.settings.training
    assert (training.steps, training.steps_per_slice) == (700, 0)
    tab.steps.setValue(0)
    assert widget.training.settings.training.steps_per_slice == 150


def test_paper_preset_counts_epochs(panel):
    _, widget = panel
    tab = widget.train_tab
    tab.preset.setCurrentText("paper")
    assert tab.epochs.isEnabled() and not tab.steps.isEnabled()
    tab.epochs.setValue(7)
    training = widget.training.settings.training
    assert (training.epochs, training.steps, training.steps_per_slice) == (7, 0, 0)
