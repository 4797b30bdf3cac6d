"""kill -9 at random points of an autosave and of a checkpoint write: the previous state loads.

A forked child writes saves (or checkpoints) in a loop, numbered 1, 2, 3, ..., and tells
the parent after each one is complete; the parent kills it with SIGKILL after a random
delay, then loads. What loads must be one whole save (every part carries the same
number) and no older than the last one the child reported complete. Then one more save
must clean the temporaries the dead writer left, and only those.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_numsnet.config import ModelConfig, PreprocessConfig
from napari_numsnet.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from napari_numsnet.io.atomic import is_own_temporary
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.io.volume import volume_from_array
from napari_numsnet.models import create_model
from napari_numsnet.testing import kill_during
from napari_numsnet.workspace import Workspace

REPETITIONS = 20
#: Kills go on past REPETITIONS (up to 4x) until this many landed inside a write, so the
#: suite always tests kills mid-write, however fast or loaded the machine is.
MID_WRITE = REPETITIONS // 4


def _repetitions(mid_write: list[int]) -> Iterator[int]:
    """0, 1, ...: at least REPETITIONS, then on until ``mid_write[0]`` reaches MID_WRITE."""
    rep = 0
    while rep < REPETITIONS or (mid_write[0] < MID_WRITE and rep < 4 * REPETITIONS):
        yield rep
        rep += 1


pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


def _count_temporaries(folder: Path) -> int:
    """How many temporaries of the killed writer there are (a kill inside a write)."""
    return sum(is_own_temporary(p) for p in folder.iterdir())


def _foreign_files(folder: Path) -> dict[str, bytes]:
    """User files beside the tool's: names a careless clean-up would take for temporaries."""
    files = {".notes.tmp.txt": b"my notes", ".backup.tmp.nii.gz": b"not ours", "x.tmp": b"x"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_kill_during_autosave_always_leaves_a_whole_save(tmp_path):
    image = np.zeros((6, 24, 20), np.int16)
    meta = volume_from_array(image).meta
    work = Workspace(tmp_path / "work", meta)
    classes = ClassTable.from_names(["background", "a", "b"])
    work.save_annotations(np.zeros(image.shape, np.uint8), [0], classes)
    foreign = _foreign_files(work.folder)

    def save(number: int) -> None:
        labels = np.full(image.shape, number % 250, np.uint8)
        work.save_annotations(labels, [number % 6, 100 + number], classes)

    last, mid_write = 0, [0]
    for rep in _repetitions(mid_write):
        done, _ = kill_during(save, seed=rep, first=last)
        mid_write[0] += _count_temporaries(work.folder)
        saved = Workspace(work.folder, meta).load_annotations(image.shape)
        assert saved is not None
        number = max(i for i in saved.annotated) - 100
        if number == -100:  # the first save, before any child wrote
            number = 0
        assert number >= done, f"rep {rep}: loaded save {number}, {done} was complete"
        assert np.all(saved.labels == number % 250), f"rep {rep}: torn save"
        assert saved.classes == classes
        last = max(done, number)
    assert mid_write[0] >= MID_WRITE, f"only {mid_write[0]} kills landed inside a save"
    work.save_annotations(np.ones(image.shape, np.uint8), [1], classes)
    left = [p.name for p in work.folder.iterdir() if is_own_temporary(p)]
    assert left == [], f"temporaries of killed writers left: {left}"
    for name, data in foreign.items():
        assert (work.folder / name).read_bytes() == data


def _checkpoint(number: int) -> Checkpoint:
    model = create_model(ModelConfig("unet", num_classes=2, widths=(2, 2, 2, 2, 2)))
    state = {k: torch.full_like(v, float(number)) for k, v in model.state_dict().items()}
    return Checkpoint(
        model_config=model.config,
        preprocess=PreprocessConfig(size=32),
        class_names=["background", "x"],
        state_dict=state,
        record={"epochs_done": number},
    )


def test_kill_during_checkpoint_write_always_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "run" / "model.numsnet.pt"
    save_checkpoint(_checkpoint(0), path)
    foreign = _foreign_files(path.parent)
    # One big tensor makes each write take a while, so kills land inside writes.
    padding = torch.zeros(2_000_000)

    def write(number: int) -> None:
        checkpoint = _checkpoint(number)
        checkpoint.record["padding"] = padding
        save_checkpoint(checkpoint, path)

    last, mid_write = 0, [0]
    for rep in _repetitions(mid_write):
        done, _ = kill_during(write, seed=100 + rep, first=last)
        mid_write[0] += _count_temporaries(path.parent)
        loaded = load_checkpoint(path)
        number = loaded.epochs_done
        assert number >= done, f"rep {rep}: loaded checkpoint {number}, {done} was complete"
        assert all(bool((t == number).all()) for t in loaded.state_dict.values())
        loaded.build_model()
        last = max(done, number)
    assert mid_write[0] >= MID_WRITE, f"only {mid_write[0]} kills landed inside a write"
    save_checkpoint(_checkpoint(last + 1), path)
    left = [p.name for p in path.parent.iterdir() if is_own_temporary(p)]
    assert left == [], f"temporaries of killed writers left: {left}"
    for name, data in foreign.items():
        assert (path.parent / name).read_bytes() == data
