"""The Train tab's CPU threads field: the thread policy with a core left to the viewer."""

from __future__ import annotations

import pytest
import torch

from napari_numsnet.engine import threads


@pytest.fixture
def keep_torch_threads():
    count = torch.get_num_threads()
    yield
    threads.reset()
    torch.set_num_threads(count)


def test_threads_field_applies_the_policy_with_a_reserve(panel, keep_torch_threads, monkeypatch):
    _, widget = panel
    tab = widget.train_tab
    assert tab.threads.value() == 0 and tab.threads.specialValueText() == "auto"
    assert tab.advanced_form.labelForField(tab.threads).text() == "CPU threads"
    choice = threads.current()
    assert choice is not None and choice.reserve == 1 and not choice.fixed
    tab.write_settings()
    assert "left to the viewer" in tab.device_label.text()

    started = []
    monkeypatch.setattr(tab.controller, "start", lambda resume=False: started.append(resume))
    tab.threads.setValue(2)
    tab._start(resume=False)
    assert started == [False]
    assert torch.get_num_threads() == 2 and threads.current().fixed
    tab.threads.setValue(0)
    tab._start(resume=False)
    assert threads.current().reserve == 1 and not threads.current().fixed
