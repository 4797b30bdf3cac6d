"""Retrain after a correction: continue from the last weights for a small step budget.

The correction loop (annotate, predict, correct the suggested slice, accept, retrain)
needs a retraining that is short and whose effect is visible. :func:`retrain` continues
a checkpoint on the current annotations for ``budget_steps`` optimiser steps (seconds on
a CPU, not a full run) and scores the held-out validation slices before and after.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_numsnet.config import TrainConfig
from napari_numsnet.data.dataset import StackSample
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.engine.device import select_device
from napari_numsnet.engine.events import ProgressCallback, TrainEvent
from napari_numsnet.engine.validation import evaluate_stacks, label_names
from napari_numsnet.errors import NumsnetError
from napari_numsnet.workflows.stacks import AnnotatedStack, as_stack_list, build_training_data
from napari_numsnet.workflows.training import train

#: Steps of one retrain after an accepted slice, chosen on the loop benchmark
#: (``benchmarks/loop.py``): enough to take the new slice in, seconds on two CPU cores.
DEFAULT_BUDGET_STEPS = 40

#: A retrain continues a converged run, whose schedule decayed the learning rate to near
#: zero: it runs at this fraction of the run's peak learning rate. At the full peak
#: (1e-3 for the fast preset) 40 steps undid the run on ACDC (the model's Dice fell from
#: 0.80 to 0.58-0.74 after the first correction, ``benchmarks/README.md`` section 10).
RETRAIN_LR_FACTOR = 0.1


@dataclass
class RetrainResult:
    """What :func:`retrain` did.

    Attributes
    ----------
    checkpoint
        The continued checkpoint (its record holds every epoch so far).
    dice_before, dice_after
        Dice per class on the validation slices before and after (class name -> Dice in
        ``[0, 1]``; empty without validation slices).
    steps
        Optimiser steps run.
    seconds
        Wall-clock seconds of the training (validation excluded).
    """

    checkpoint: Checkpoint
    dice_before: dict[str, float]
    dice_after: dict[str, float]
    steps: int
    seconds: float

    @staticmethod
    def _mean(dice: dict[str, float]) -> float:
        values = [v for k, v in dice.items() if k != "background"]
        return float(np.mean(values)) if values else float("nan")

    @property
    def mean_before(self) -> float:
        """Mean foreground Dice before (NaN without validation slices)."""
        return self._mean(self.dice_before)

    @property
    def mean_after(self) -> float:
        """Mean foreground Dice after (NaN without validation slices)."""
        return self._mean(self.dice_after)


def _validation_data(
    checkpoint: Checkpoint, stacks: Sequence[AnnotatedStack]
) -> list[StackSample]:
    """The held-out slices of ``stacks``, preprocessed as ``checkpoint`` (and its
    continuation, which keeps the preprocessing) expects; empty without any."""
    if not any(len(s.val_slices) for s in stacks):
        return []
    return build_training_data(stacks, checkpoint.model_config, checkpoint.preprocess)[1]


def _validation_dice(checkpoint: Checkpoint, val: list[StackSample]) -> dict[str, float]:
    """Dice per class of ``checkpoint`` on ``val`` (empty without validation data)."""
    if not val:
        return {}
    model = checkpoint.build_model()
    cfg = checkpoint.model_config
    device = select_device(checkpoint.train_config.device if checkpoint.train_config else "cpu")
    names = label_names(checkpoint.class_names, cfg.num_classes, cfg.exclusive)
    return evaluate_stacks(model, val, names, device, checkpoint.direction)


def _budget(base: TrainConfig, steps: int, learning_rate_factor: float) -> TrainConfig:
    """``base`` for exactly ``steps`` steps at ``learning_rate_factor`` times its learning
    rate.

    The budget does not grow with the annotation (``steps_per_slice`` off), a
    continuation is neither warmed up again nor decayed (constant schedule), and it runs
    without the semi-supervised term: a few dozen steps that should learn the corrected
    slices, at the cost of a supervised step.
    """
    return base.replace(
        semi_supervised=0.0,
        steps=steps,
        steps_per_slice=0,
        min_steps=0,
        warmup_steps=0,
        schedule="constant",
        learning_rate=base.learning_rate * learning_rate_factor,
    )


def retrain(
    checkpoint: Checkpoint,
    stacks: AnnotatedStack | Sequence[AnnotatedStack],
    budget_steps: int = DEFAULT_BUDGET_STEPS,
    training: TrainConfig | None = None,
    callback: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
    learning_rate_factor: float = RETRAIN_LR_FACTOR,
) -> RetrainResult:
    """Continue ``checkpoint`` on the current annotations for ``budget_steps`` steps.

    Parameters
    ----------
    checkpoint
        The last weights (with their optimiser state, preprocessing and classes).
    stacks
        The annotated stack(s), the accepted correction included; their ``val_slices``
        are held out and scored before and after.
    budget_steps
        Optimiser steps to run (at least 1), whatever the number of annotated slices.
    training
        Batch size, learning rate, augmentation, device, seed; ``None`` takes the
        checkpoint's own training settings. Its epochs and steps are replaced by the budget.
    callback, stop_event
        Progress events and the stop flag, as for :func:`train`.
    learning_rate_factor
        The retrain's constant learning rate as a fraction of ``training``'s (the run's
        peak): a converged model is fine-tuned, not trained again from its peak rate.

    Returns
    -------
    RetrainResult
        The new checkpoint and the validation Dice before and after.

    Raises
    ------
    NumsnetError
        A budget below 1 step, or the errors of :func:`train`.
    """
    if budget_steps < 1:
        raise NumsnetError(
            f"The retraining budget is {budget_steps} steps.", "Give at least 1 step."
        )
    if not learning_rate_factor > 0:
        raise NumsnetError(
            f"The retraining learning-rate factor is {learning_rate_factor}.",
            "Give a factor above 0 (0.1: a tenth of the run's peak learning rate).",
        )
    if not isinstance(checkpoint, Checkpoint):
        raise NumsnetError(
            "Only a single model can be retrained, not a cascade.",
            "Retrain each stage of the cascade with its own annotations.",
        )
    stacks = as_stack_list(stacks)
    base = training or checkpoint.train_config or TrainConfig()
    # The peak rate of the run, not the scaled rate an earlier retrain ran at.
    peak = base.learning_rate
    if training is None:
        peak = float(checkpoint.record.get("peak_learning_rate", peak))
    val = _validation_data(checkpoint, stacks)
    before = _validation_dice(checkpoint, val)
    emit = callback or (lambda event: None)
    steps = 0

    def count(event: TrainEvent) -> None:
        nonlocal steps
        steps += event.kind == "step"
        emit(event)

    start = time.perf_counter()
    continued = train(
        stacks,
        training=_budget(base.replace(learning_rate=peak), budget_steps, learning_rate_factor),
        resume=checkpoint,
        callback=count,
        stop_event=stop_event,
    )
    seconds = time.perf_counter() - start
    continued.record["peak_learning_rate"] = peak
    after = _validation_dice(continued, val)
    return RetrainResult(continued, before, after, steps, seconds)
