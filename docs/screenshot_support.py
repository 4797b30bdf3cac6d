"""What the screenshot scripts share: Qt event pumping and the sample CT opened in the
panel with its planned slices annotated from the sample's reference labels."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
from qtpy.QtWidgets import QApplication

from napari_numsnet import pipeline


def pump(seconds: float = 0.3) -> None:
    """Let Qt process events for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def wait(condition: Callable[[], bool], limit: float = 1200.0) -> None:
    """Process events until ``condition()`` holds (``limit`` seconds at most)."""
    end = time.monotonic() + limit
    while not condition():
        QApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() > end:
            raise TimeoutError("the panel did not finish in time")


def annotated_sample() -> tuple[napari.Viewer, Any, pipeline.Sample]:
    """A viewer with a copy of the sample CT, the panel docked, the sample's classes
    loaded and every planned slice annotated with the reference labels.

    Returns
    -------
    tuple
        The viewer, the panel widget and the sample (image and labels).
    """
    ct = Path(tempfile.mkdtemp()) / "ct.nii.gz"
    shutil.copy(pipeline.sample_dir() / "ct_sample.nii.gz", ct)
    viewer = napari.Viewer(title="napari")
    viewer.window.resize(1480, 980)
    viewer.open(ct, plugin="napari-numsnet")
    _, widget = viewer.window.add_plugin_dock_widget("napari-numsnet", "Few-shot segmentation")
    widget = getattr(widget, "__wrapped__", widget)
    sample = pipeline.load_sample()
    a = widget.annotation
    widget.annotate_tab._load_classes(str(pipeline.sample_dir() / "ct_sample_classes.json"))
    widget.annotate_tab.buttons["New annotation layer"].click()
    for z in a.planned:
        a.labels.data[z] = sample.labels[z]
        a.mark(int(z))
    a.labels.refresh()
    return viewer, widget, sample
