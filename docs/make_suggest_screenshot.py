"""Take the user guide's screenshot of the slice suggestions on the sample CT.

    xvfb-run -a -s "-screen 0 1600x1050x24" python docs/make_suggest_screenshot.py docs/images

Annotates the planned slices with the sample's reference labels, trains the default
model with the fast preset for a short fixed budget (150 steps, so that the prediction
still has slices worth correcting), predicts the whole stack, goes to the suggested
slice with "Next suggested slice", and takes the Annotate tab with its tinted strip.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import napari
from qtpy.QtWidgets import QApplication

from napari_numsnet import pipeline
from napari_numsnet.engine.events import TrainState


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the PNG file")
    parser.add_argument("--steps", type=int, default=150, help="training steps")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

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

    train = widget.train_tab
    train.preset.setCurrentText("fast")
    train.device.setCurrentText("cpu")
    settings = widget.training.settings
    settings.training = settings.training.replace(steps=args.steps, steps_per_slice=0)
    train.train_button.click()
    wait(lambda: widget.training.state is not TrainState.TRAINING)

    widget.predict_tab.predict_button.click()
    wait(lambda: not widget.prediction.running)
    widget.predict_tab.suggest_button.click()
    a.labels.visible = False
    prediction = viewer.layers["ct prediction"]
    prediction.opacity = 0.6
    viewer.layers.selection.active = prediction
    widget.tabs.setCurrentIndex(0)
    pump(1.0)
    path = args.out / "suggest.png"
    iio.imwrite(path, viewer.screenshot(canvas_only=False, flash=False))
    print("wrote", path, "suggested slice", a.current_slice())
    print("ranking", widget.prediction.suggestion.top(8))
    viewer.close()


if __name__ == "__main__":
    main()
