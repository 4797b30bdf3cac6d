"""The Predict tab's "Direction": set to the loaded model's own (both orders averaged for
a NUMSnet trained on runs in both orders), and only offered for the NUMSnet family."""

from __future__ import annotations

import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine.checkpoint import save_checkpoint
from napari_numsnet.io.classes import ClassTable

pytestmark = pytest.mark.gui


def saved_model(tmp_path, name: str, reverse_runs: bool):
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[:, 8:20, 8:20] = 1
    image = labels.astype(np.float32)
    stack = pipeline.AnnotatedStack(image, labels, [1, 4, 6], [6], name="toy")
    config = TrainConfig(steps=2, batch_size=2, amp=False, device="cpu", reverse_runs=reverse_runs)
    checkpoint = pipeline.train(
        stack,
        ModelConfig(name, num_classes=2, widths=(4, 4, 8, 8, 8)),
        config,
        PreprocessConfig(size=32),
        ClassTable.default(2),
    )
    return save_checkpoint(checkpoint, tmp_path / f"{name}-{reverse_runs}.numsnet.pt")


def test_the_direction_follows_the_loaded_model(panel, tmp_path, errors):
    _viewer, widget = panel
    tab = widget.predict_tab
    tab._load(str(saved_model(tmp_path, "numsnet", reverse_runs=True)))
    tab.refresh()
    assert tab.direction.currentText() == "both" and tab.direction.isEnabled()
    tab.write_settings()
    assert widget.prediction.settings.config.direction == "both"
    tab.grab().save(str(tmp_path / "direction_both.png"))

    tab._load(str(saved_model(tmp_path, "numsnet", reverse_runs=False)))
    tab.refresh()
    assert tab.direction.currentText() == "forward" and tab.direction.isEnabled()

    tab._load(str(saved_model(tmp_path, "drsegunet", reverse_runs=True)))
    tab.refresh()
    assert not tab.direction.isEnabled()  # a slice model: the order does not matter
    assert not errors
