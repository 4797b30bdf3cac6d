"""The Train tab's CPU threads field: the thread policy with a core left to the viewer."""

from __future__ import annotations

import threading

import pytest
import torch

from napari_numsnet import pipeline
from napari_numsnet._napari import training as training_module
from napari_numsnet.engine import threads
from napari_numsnet.errors import NumsnetError


@pytest.fixture
def keep_torch_threads():
    count = torch.get_num_threads()
    yield
    threads.reset()
    torch.set_num_threads(count)


def test_threads_field_applies_the_policy_with_a_reserve(
    panel, keep_torch_threads, monkeypatch, qtbot
):
    _, widget = panel
    tab = widget.train_tab
    assert tab.threads.value() == 0 and tab.threads.specialValueText() == "auto"
    assert tab.advanced_form.labelForField(tab.threads).text() == "CPU threads"
    choice = threads.current()
    assert choice is not None and choice.reserve == 1 and not choice.fixed
    tab.write_settings()
    assert "left to the viewer" in tab.device_label.text()

    # The run applies the field in its worker thread, before it trains.
    seen = []

    def train(*args, **kwargs):
        seen.append((threading.current_thread().name, torch.get_num_threads(), threads.current()))
        raise NumsnetError("Stopped by the test.", "-")

    monkeypatch.setattr(training_module.pipeline, "train", train)
    monkeypatch.setattr(training_module, "report", lambda exc: None)
    annotate_one_slice(widget)
    tab.threads.setValue(2)
    assert tab.controller.settings.threads == 2
    tab._start(resume=False)
    qtbot.waitUntil(lambda: idle(tab.controller), timeout=30_000)
    name, count, choice = seen[-1]
    assert name != threading.main_thread().name
    assert count == 2 and choice.fixed
    tab.threads.setValue(0)
    assert tab.controller.settings.threads is None
    tab._start(resume=False)
    qtbot.waitUntil(lambda: idle(tab.controller), timeout=30_000)
    assert len(seen) == 2 and seen[-1][2].reserve == 1 and not seen[-1][2].fixed


def idle(controller) -> bool:
    """The worker has ended and its outcome has reached the GUI thread."""
    return not controller.busy and not controller.running


def annotate_one_slice(widget) -> None:
    a = widget.annotation
    a.new_labels_layer(pipeline.load_sample().classes)
    z = int(a.planned[0])
    a.labels.data[z] = pipeline.load_sample().labels[z]
    a.mark(z)
