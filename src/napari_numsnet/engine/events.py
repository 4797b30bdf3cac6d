"""Progress crossing from the engine to whoever watches it (a progress bar, a widget, a log).

The engine calls a plain callback with :class:`TrainEvent` records, so the same
training code drives tqdm in a terminal and a live plot in napari.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


class TrainState(str, enum.Enum):
    """Where a training run is; the widgets enable their buttons from it."""

    IDLE = "idle"
    TRAINING = "training"
    DONE = "done"
    STOPPED = "stopped"
    CRASHED = "crashed"


@dataclass(frozen=True)
class TrainEvent:
    """One report from :func:`~napari_numsnet.engine.trainer.fit`.

    Attributes
    ----------
    kind
        ``"start"``, ``"step"`` (after each optimiser step), ``"epoch"`` (after each
        epoch and its validation) or ``"end"``.
    epoch
        Epoch number, starting at 1 (0 for ``"start"``).
    step, total_steps
        Optimiser steps done so far and planned in this run.
    loss
        Mean training loss of the step or epoch.
    val_dice
        Validation Dice per class name (``"epoch"`` only, when validation slices exist).
    slices_per_second
        Training throughput of the step or epoch.
    state
        The run's state after this event.
    message
        Free text for the user (device used, why it stopped).
    """

    kind: Literal["start", "step", "epoch", "end"]
    epoch: int
    step: int
    total_steps: int
    loss: float | None = None
    val_dice: dict[str, float] = field(default_factory=dict)
    slices_per_second: float | None = None
    state: TrainState = TrainState.TRAINING
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


ProgressCallback = Callable[[TrainEvent], None]
