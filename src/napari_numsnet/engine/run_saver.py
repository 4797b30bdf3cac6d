"""Checkpoints written while a run trains, so a crash, a kill or a failed rank loses little.

``fit``'s ``on_checkpoint`` hook hands over the current state at most every
``TrainConfig.checkpoint_seconds`` seconds and at every new best validation Dice;
:func:`periodic_saver` writes them atomically beside the output as
``<name>.last.numsnet.pt`` (with the optimizer's state, to continue) and
``<name>.best.numsnet.pt``. ``numsnet train --resume <output>`` continues from the
``last`` checkpoint when the run never wrote its output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_numsnet.config import PreprocessConfig, TrainConfig
from napari_numsnet.engine.checkpoint import SUFFIX, Checkpoint, save_checkpoint


def sibling(output: str | os.PathLike[str], which: str) -> Path:
    """``run/model.numsnet.pt`` -> ``run/model.<which>.numsnet.pt``."""
    path = Path(output)
    name = path.name
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else path.stem
    return path.with_name(f"{stem}.{which}{SUFFIX}")


def periodic_saver(
    output: str | os.PathLike[str],
    preprocess: PreprocessConfig,
    class_names: Sequence[str],
    training: TrainConfig,
    log: Callable[[str], None] | None = None,
) -> Callable[[Any, str], None]:
    """The ``on_checkpoint`` hook that writes ``last`` and ``best`` beside ``output``.

    Parameters
    ----------
    output
        The final checkpoint of the run.
    preprocess, class_names, training
        What the checkpoint records besides the weights.
    log
        Called with one line after each write.

    Returns
    -------
    Callable
        ``hook(result, which)`` with a ``TrainResult`` and ``"last"`` or ``"best"``.
    """

    def save(result: Any, which: str) -> None:
        checkpoint = Checkpoint.from_model(
            result.model,
            preprocess=preprocess,
            class_names=list(class_names),
            train_config=training,
            optimizer_state=result.optimizer_state or None,
            record={**result.record, "state": "checkpoint", "which": which},
        )
        path = save_checkpoint(checkpoint, sibling(output, which))
        if log is not None:
            log(f"{which} checkpoint: {path} ({checkpoint.epochs_done} epochs)")

    return save


def resume_path(resume: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """The checkpoint ``--resume`` means: the file itself, else the run's ``last`` one.

    A run that crashed or was killed never wrote ``output``; resuming it by that name
    continues from ``<output>.last.numsnet.pt``.
    """
    path = Path(resume)
    if not path.is_file() and sibling(path, "last").is_file():
        return sibling(path, "last")
    return path
