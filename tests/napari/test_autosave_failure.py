"""What the panel shows when an autosave cannot be written (a full disk)."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from napari_numsnet.errors import resource_error

pytestmark = pytest.mark.gui


def test_a_full_disk_says_not_saved_and_why_then_recovers(panel, monkeypatch):
    _, widget = panel
    a = widget.annotation
    a.new_labels_layer()
    a.labels.data[3, 10:20, 10:20] = 1
    a.mark(3)
    widget.autosaver.save_now()
    label = widget.annotate_tab.saved_label
    assert label.text().startswith("Autosaved")
    saved = a.workspace.load_annotations(a.labels.data.shape)

    def full_disk(*args, **kwargs):
        error = OSError(errno.ENOSPC, "No space left on device")
        raise resource_error(error, a.workspace.folder / "annotations")

    monkeypatch.setattr(a.workspace, "save_annotations", full_disk)
    a.labels.data[4, 10:20, 10:20] = 2
    a.mark(4)
    widget.autosaver.save_now()  # no exception escapes into the viewer
    assert label.text().startswith("NOT saved:") and "disk is full" in label.text()
    assert "Free some space" in label.toolTip()
    again = a.workspace.load_annotations(a.labels.data.shape)
    assert sorted(again.annotated) == sorted(saved.annotated)  # the last save is intact
    np.testing.assert_array_equal(again.labels, saved.labels)

    monkeypatch.undo()  # space again: the next autosave writes and says so
    widget.autosaver.save_now()
    assert label.text().startswith("Autosaved")
    assert 4 in a.workspace.load_annotations(a.labels.data.shape).annotated
