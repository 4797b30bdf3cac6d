"""Take the user guide's screenshots of the NUMSnet panel on the sample CT.

Run on a desktop, or headless under a virtual screen:

    xvfb-run -a -s "-screen 0 1600x1050x24" python docs/make_screenshots.py docs/images

It annotates the planned slices with the sample's reference labels (the cursor over the
liver, so that the status bar names the class), trains the default model (DRSegUNet) with
the fast preset on the CPU, taking the Train tab mid-training, predicts, and runs the
k-means pseudo-labels, taking one screenshot per step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import napari
import numpy as np
from screenshot_support import annotated_sample, pump, wait

from napari_numsnet.engine.events import TrainState


def shot(viewer: napari.Viewer, path: Path) -> None:
    pump(0.5)
    iio.imwrite(path, viewer.screenshot(canvas_only=False, flash=False))
    print("wrote", path)


def hover(viewer: napari.Viewer, layer, value: int, z: int) -> None:
    """Put the cursor over a voxel of ``value`` in slice ``z`` and update the status bar."""
    ys, xs = np.nonzero(np.asarray(layer.data[z]) == value)
    middle = len(ys) // 2
    viewer.cursor.position = tuple(layer.data_to_world([z, ys[middle], xs[middle]]))
    viewer.update_status_from_cursor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    # Annotate: the sample's classes, the planned slices copied from its reference labels.
    viewer, widget, sample = annotated_sample()
    a = widget.annotation
    a.labels.opacity = 0.6
    # The annotated slice with the most liver.
    z = max((int(z) for z in a.planned), key=lambda z: int((sample.labels[z] == 1).sum()))
    a.go_to(z)
    viewer.layers.selection.active = a.labels
    widget.annotate_tab.class_list.select(1)
    widget.autosaver.save_now()  # voxel counts in the class list
    pump(2.0)
    hover(viewer, a.labels, 1, z)
    shot(viewer, args.out / "annotate.png")

    # Train the default model with the fast preset on the CPU (three training slices,
    # one for validation).
    train = widget.train_tab
    train.preset.setCurrentText("fast")
    train.device.setCurrentText("cpu")
    widget.tabs.setCurrentIndex(1)
    train.train_button.click()
    # Mid-training: a few epochs of validation Dice on the plot.
    wait(
        lambda: (
            widget.training.state is not TrainState.TRAINING
            or min((len(p) for p in train.plot.dice.values()), default=0) >= 4
        )
    )
    area = widget.tabs.currentWidget()  # the tab's scroll area: show the plots
    area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())
    shot(viewer, args.out / "train.png")
    wait(lambda: widget.training.state is not TrainState.TRAINING)

    # Predict the whole stack and look at a slice the model never saw.
    widget.tabs.setCurrentIndex(3)
    widget.predict_tab.predict_button.click()
    wait(lambda: not widget.prediction.running)
    a.labels.visible = False
    prediction = viewer.layers["ct prediction"]
    prediction.opacity = 0.6
    viewer.layers.selection.active = prediction
    a.go_to(22)
    shot(viewer, args.out / "predict.png")

    # k-means pseudo-labels on a slice through the lungs.
    for layer in viewer.layers:
        layer.visible = layer.name == "ct"
    widget.tabs.setCurrentIndex(2)
    widget.pseudo_tab.run_button.click()
    wait(lambda: not widget.pseudo.running)
    a.go_to(27)
    viewer.layers.selection.active = viewer.layers["ct pseudo-labels"]
    shot(viewer, args.out / "pseudo.png")
    viewer.close()


if __name__ == "__main__":
    main()
