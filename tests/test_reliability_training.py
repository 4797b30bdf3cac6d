"""Training never loses a run: last/best checkpoints during training, resume from them.

A run is made to crash after its second epoch (its progress callback raises, as a kill
or a failed rank would end it); the ``last`` checkpoint written by the hook must then
load, and ``numsnet train --resume <output>`` must continue from it.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet.cli import main
from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine.checkpoint import load_checkpoint
from napari_numsnet.engine.run_saver import periodic_saver, resume_path, sibling
from napari_numsnet.io.atomic import is_own_temporary
from napari_numsnet.io.classes import ClassTable

WIDTHS = (2, 2, 2, 2, 2)


def _stack(z: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (z, 32, 32)).astype(np.float32)
    labels = np.zeros((z, 32, 32), np.uint8)
    labels[1, 8:20, 8:20] = 1
    labels[4, 10:24, 4:16] = 1
    labels[3, 5:15, 5:15] = 1
    return image, labels


class _Crash(RuntimeError):
    pass


def test_sibling_names():
    assert sibling("run/model.numsnet.pt", "last").name == "model.last.numsnet.pt"
    assert sibling("run/m.pt", "best").name == "m.best.numsnet.pt"


def test_a_crashed_run_leaves_last_and_best_and_resume_continues(tmp_path, capsys):
    image, labels = _stack()
    output = tmp_path / "model.numsnet.pt"
    training = TrainConfig(
        epochs=4, batch_size=2, device="cpu", checkpoint_seconds=0.0, amp=False, augment=False
    )
    preprocess = PreprocessConfig(size=32)
    classes = ClassTable.from_names(["background", "x"])
    stack = pipeline.AnnotatedStack(image, labels, [1, 3, 4], [3], name="s")

    def crash_after_two(event) -> None:
        if event.kind == "epoch" and event.epoch == 2:
            raise _Crash("killed")

    with pytest.raises(_Crash):
        pipeline.train(
            stack,
            ModelConfig("drsegunet", num_classes=2, widths=WIDTHS),
            training,
            preprocess,
            classes,
            callback=crash_after_two,
            on_checkpoint=periodic_saver(output, preprocess, classes.names, training),
        )
    assert not output.exists()  # the run never finished
    last = load_checkpoint(sibling(output, "last"))
    assert last.epochs_done >= 1 and last.optimizer_state
    assert load_checkpoint(sibling(output, "best")).class_names == ["background", "x"]
    assert not [p for p in tmp_path.iterdir() if is_own_temporary(p)]
    assert resume_path(output, output) == sibling(output, "last")

    # Resume the crashed run by its output's name: it continues from "last".
    affine = np.eye(4)
    nib.save(nib.Nifti1Image(np.moveaxis(image, 0, 2), affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.moveaxis(labels, 0, 2), affine), tmp_path / "lab.nii.gz")
    rc = main(
        [
            "train", "--image", str(tmp_path / "ct.nii.gz"), "--labels",
            str(tmp_path / "lab.nii.gz"), "--annotated", "1,3,4", "--val", "3",
            "--resume", str(output), "--output", str(output), "--epochs", "1",
            "--batch-size", "2", "--device", "cpu",
        ]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    resumed = load_checkpoint(output)
    assert resumed.epochs_done == last.epochs_done + 1


def test_an_unwritable_output_is_refused_before_the_first_step(tmp_path, capsys):
    image, labels = _stack()
    nib.save(nib.Nifti1Image(np.moveaxis(image, 0, 2), np.eye(4)), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.moveaxis(labels, 0, 2), np.eye(4)), tmp_path / "lab.nii.gz")
    (tmp_path / "out.numsnet.pt").mkdir()
    rc = main(
        [
            "train", "--image", str(tmp_path / "ct.nii.gz"), "--labels",
            str(tmp_path / "lab.nii.gz"), "--output", str(tmp_path / "out.numsnet.pt"),
            "--epochs", "1", "--batch-size", "2", "--device", "cpu",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 2 and "existing folder" in captured.err
    assert "epoch" not in captured.out
