"""The Train tab's semi-supervised tick box: it follows the preset, its state reaches the
training settings, and a run started from the tab with it ticked uses the term."""

from __future__ import annotations

import pytest

from napari_numsnet.config import TrainConfig
from napari_numsnet.engine import step as step_module
from napari_numsnet.presets import PRESETS, SEMI_SUPERVISED

pytestmark = pytest.mark.gui


def test_the_box_follows_the_preset_and_reaches_the_settings(panel):
    _, widget = panel
    tab = widget.train_tab
    assert tab.advanced_form.labelForField(tab.semi_supervised).text() == "Semi-supervised"
    for name, preset in PRESETS.items():
        tab.preset.setCurrentText(name)
        training = widget.training.settings.training
        assert tab.semi_supervised.isChecked() == (preset.train.semi_supervised > 0)
        assert training.semi_supervised == preset.train.semi_supervised
    tab.preset.setCurrentText("paper")  # no term in the paper's recipe: ticking adds it
    tab.semi_supervised.setChecked(True)
    training = widget.training.settings.training
    assert {key: getattr(training, key) for key in SEMI_SUPERVISED} == SEMI_SUPERVISED
    tab.semi_supervised.setChecked(False)
    assert widget.training.settings.training.semi_supervised == 0.0


def test_a_run_from_the_tab_with_the_box_ticked_uses_the_term(
    panel, qtbot, monkeypatch, tiny_slice_run
):
    _, widget = panel
    tab = widget.train_tab
    calls = []
    original = step_module.consistency_loss

    def spy(model, unlabelled, *args):
        calls.append(unlabelled.shape[0])
        return original(model, unlabelled, *args)

    monkeypatch.setattr(step_module, "consistency_loss", spy)
    tiny_slice_run(widget, TrainConfig(steps=5, batch_size=2, device="cpu", amp=False))
    assert not tab.semi_supervised.isChecked()
    tab.semi_supervised.setChecked(True)
    settings = widget.training.settings
    settings.training = settings.training.replace(semi_supervised_min_slices=1)
    tab._start(resume=False)
    qtbot.waitUntil(
        lambda: widget.training.checkpoint is not None and not widget.training.busy,
        timeout=60_000,
    )
    assert calls and set(calls) == {2}
    assert "semi_supervised_skipped" not in widget.training.checkpoint.record
