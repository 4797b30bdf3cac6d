"""CHS-Net's cascade from the panel: region model in the Train tab, train, predict, export."""

from __future__ import annotations

import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig
from napari_numsnet.engine.events import TrainState
from napari_numsnet.models import get_spec
from napari_numsnet.workflows.cascade import Cascade, load_predictor

pytestmark = pytest.mark.gui
MINUTE_MS = 60_000


def test_train_predict_and_export_a_cascade(panel, tmp_path, qtbot, tiny_model, errors):
    viewer, widget = panel
    a, t = widget.annotation, widget.training
    sample = pipeline.load_sample()
    widget.annotate_tab._load_classes(str(pipeline.sample_dir() / "ct_sample_classes.json"))
    widget.annotate_tab.buttons["New annotation layer"].click()
    for z in a.planned.tolist():
        a.labels.data[z] = sample.labels[z]
        a.go_to(z)
        widget.annotate_tab.buttons["Done ✓ and next"].click()

    # The Train tab's region model, at the width scale of the preset (fast: half widths).
    tab = widget.train_tab
    tab.preset.setCurrentText("fast")
    tab.cascade.setCurrentIndex(tab.cascade.findData("unet"))
    region = t.settings.cascade_region
    assert region is not None and region.name == "unet"
    assert region.widths == tuple(w // 2 for w in get_spec("unet").default_widths)
    tab.cascade.setCurrentIndex(0)
    assert t.settings.cascade_region is None
    tab.cascade.setCurrentIndex(tab.cascade.findData("unet"))

    tiny_model(widget, epochs=1)
    t.settings.cascade_region = ModelConfig("unet", widths=(4, 8, 8, 8, 8))
    tab.train_button.click()
    qtbot.waitUntil(lambda: t.state is not TrainState.TRAINING, timeout=MINUTE_MS)
    assert t.state is TrainState.DONE, errors
    cascade = t.checkpoint
    assert isinstance(cascade, Cascade)
    assert cascade.region.model_config.name == "unet"
    assert cascade.inner.model_config.name == "numsnet"
    assert isinstance(load_predictor(a.workspace.checkpoint_path), Cascade)

    # Continue is refused with the reason; nothing crashes.
    tab.continue_button.click()
    assert t.state is TrainState.DONE
    assert any("cannot be continued" in e for e in errors)
    errors.clear()

    widget.predict_tab.predict_button.click()
    qtbot.waitUntil(lambda: not widget.prediction.running, timeout=MINUTE_MS)
    expected = pipeline.predict(cascade, viewer.layers["ct"].data).labels
    np.testing.assert_array_equal(viewer.layers["ct prediction"].data, expected)
    assert "CHS-Net cascade UNet → NUMSnet" in widget.predict_tab.model_label.text()

    written = widget.export_tab.save_checkpoint(str(tmp_path / "cascade"))
    exported = load_predictor(written)
    assert isinstance(exported, Cascade)
    np.testing.assert_array_equal(
        pipeline.predict(exported, viewer.layers["ct"].data).labels, expected
    )
    assert not errors
