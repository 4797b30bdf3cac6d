"""The Train tab's 2.5D context field: it reaches the trained model, and only slice models
take it."""

from __future__ import annotations

import pytest

from napari_numsnet import pipeline
from napari_numsnet.config import PreprocessConfig, TrainConfig

pytestmark = pytest.mark.gui


def test_context_field_trains_a_2_5d_model_and_is_off_for_numsnet(panel, qtbot):
    _, widget = panel
    tab = widget.train_tab
    assert tab.advanced_form.labelForField(tab.context).text() == "2.5D context"
    assert tab.context.value() == 0 and tab.context.text() == "off"
    tab.model.setCurrentIndex(tab.model.findData("drsegunet"))
    tab.context.setValue(1)
    settings = widget.training.settings
    assert tab.context.isEnabled() and settings.model.context == 1

    a = widget.annotation
    a.new_labels_layer(pipeline.load_sample().classes)
    z = int(a.planned[0])
    a.labels.data[z] = pipeline.load_sample().labels[z]
    a.mark(z)
    settings.model = settings.model.replace(widths=(4, 8, 8, 8, 8))  # seconds, not minutes
    settings.training = TrainConfig(epochs=1, batch_size=1, device="cpu", amp=False)
    settings.preprocess = PreprocessConfig(size=32)
    tab._start(resume=False)
    qtbot.waitUntil(
        lambda: widget.training.checkpoint is not None and not widget.training.busy,
        timeout=60_000,
    )
    model = widget.training.checkpoint.build_model()
    assert model.config.context == 1 and model.config.input_channels == 3

    tab.model.setCurrentIndex(tab.model.findData("numsnet"))
    assert not tab.context.isEnabled() and settings.model.context == 0
