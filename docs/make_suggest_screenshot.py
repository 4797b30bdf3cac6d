"""Take the user guide's screenshot of the slice suggestions on the sample CT.

    xvfb-run -a -s "-screen 0 1600x1050x24" python docs/make_suggest_screenshot.py docs/images

Annotates the planned slices with the sample's reference labels, trains the default
model with the fast preset for a short fixed budget (150 steps, so that the prediction
still has slices worth correcting), predicts the whole stack, goes to the suggested
slice with "Next suggested slice", and takes the Annotate tab with its tinted strip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
from screenshot_support import annotated_sample, pump, wait

from napari_numsnet.engine.events import TrainState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the PNG file")
    parser.add_argument("--steps", type=int, default=150, help="training steps")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    viewer, widget, _ = annotated_sample()
    a = widget.annotation

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
