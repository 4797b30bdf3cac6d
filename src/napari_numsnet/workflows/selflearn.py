"""Two-level self-learning on k-means pseudo-labels (DRSegUNet thesis, section 4.4.2).

Level 0 is the k-means pseudo-labels of the stack (:func:`kmeans_pseudolabels`).
Level 1 trains a model from scratch on them over ``slices`` (by default every slice with
lung), then predicts ``slices`` and ``new_slices`` (by default the other slices of the
stack). Level 2 takes level 1's predictions on those slices as its labels and fine-tunes
level 1's weights (not a new model) with the first two layers frozen, at a learning
rate 100 times smaller (thesis: 9.8e-4 at level 1, 9.8e-6 at level 2). Further levels,
when asked for, repeat level 2's recipe on the level before.

"The first two layers" is read as the thesis' Keras wording "the first two layers of the
model are set to non-trainable mode": a Keras layer is one row of the thesis' layer
tables, and ``trainable = False`` only acts on layers with weights (the input layer has
none). The first two such layers of DRSegUNet (table 2) are the stem's first conv 3x3
(``stem.body.0``) and the BatchNorm after it (``stem.body.1``); counted the same way,
the UNet family's are the first conv 3x3 of X(1,1) and its BatchNorm (``encoders.0.0``,
``encoders.0.2``). Whole blocks are not meant: the thesis calls those stem, encoder,
bridge and decoder, not layers. A frozen layer has ``requires_grad = False`` (Adam skips
parameters without a gradient, so its weights stay bit-identical), and a frozen
BatchNorm stays in eval mode, as a non-trainable Keras BatchNormalization runs in
inference mode: its running mean and variance do not change either.

The thesis warns that level 2 is fragile: trying to lower a loss that penalises the noise
of the generated labels "overthrew the model leading it to predict noisy labels or just
no labels". So every level is checked against the k-means labels: when a class that
covered more than ``min_class_fraction`` of the lung falls below ``collapse_ratio`` times
its k-means share, or one class fills (nearly) the whole of the slices, the level is
marked collapsed with the reason, the loop stops, and the level before it is the result.
Every level is kept, so that each one can be shown.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence

import numpy as np

from napari_numsnet.config import (
    ClassWeightsName,
    ModelConfig,
    PredictConfig,
    PreprocessConfig,
    TrainConfig,
)
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.engine.class_weights import takes_class_weights
from napari_numsnet.engine.events import ProgressCallback, TrainEvent, TrainState
from napari_numsnet.engine.freezing import freeze_first_layers
from napari_numsnet.engine.trainer import fit
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.pseudolabel.kmeans import kmeans_pseudolabels
from napari_numsnet.pseudolabel.records import KMeansConfig
from napari_numsnet.workflows.prediction import predict
from napari_numsnet.workflows.selflearn_records import (
    CLUSTER_NAMES,
    LevelResult,
    SelfLearningConfig,
    SelfLearningResult,
    class_names,
    collapse_reason,
    label_fractions,
)
from napari_numsnet.workflows.stacks import AnnotatedStack, build_training_data
from napari_numsnet.workflows.training import train

__all__ = [
    "CLUSTER_NAMES",
    "LevelResult",
    "SelfLearningConfig",
    "SelfLearningResult",
    "class_names",
    "collapse_reason",
    "fine_tune_budget",
    "freeze_first_layers",
    "label_fractions",
    "self_learning",
]


def _check_slices(
    index: Sequence[int] | np.ndarray | None, n_slices: int, what: str
) -> np.ndarray | None:
    if index is None:
        return None
    out = np.unique(np.asarray(list(index), dtype=np.int64))
    bad = out[(out < 0) | (out >= n_slices)]
    if bad.size:
        raise NumsnetError(
            f"{what} {bad.tolist()} are outside the stack of {n_slices} slices.",
            f"Give slice indices from 0 to {n_slices - 1}.",
        )
    return out


def _level_callback(callback: ProgressCallback | None, level: int) -> ProgressCallback | None:
    """``callback`` with ``level N: `` put before each event's message."""
    if callback is None:
        return None

    def emit(event: TrainEvent) -> None:
        message = f"level {level}: {event.message}" if event.message else f"level {level}"
        callback(dataclasses.replace(event, message=message))

    return emit


def self_learning(
    stack: np.ndarray,
    model: ModelConfig,
    training: TrainConfig,
    kmeans: KMeansConfig | None = None,
    config: SelfLearningConfig | None = None,
    slices: Sequence[int] | None = None,
    new_slices: Sequence[int] | None = None,
    preprocess: PreprocessConfig | None = None,
    classes: ClassTable | None = None,
    callback: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
    on_level: Callable[[LevelResult], None] | None = None,
) -> SelfLearningResult:
    """Segment a stack without annotations: k-means labels, then self-learning levels.

    Parameters
    ----------
    stack
        ``(Z, H, W)`` CT in HU (other data goes through k-means' percentile fallback,
        said in ``notes``).
    model
        The network of level 1; it must predict ``k + 1`` label values (background and the
        k k-means classes): ``num_classes = k + 1`` for exclusive classes, ``k`` otherwise.
    training
        Level 1's training (thesis: 20 epochs, 9.8e-4; the plugin's panel: the preset's
        step budget). Levels 2+ take it with the learning rate times
        ``config.fine_tune_lr_factor`` and the budget of :func:`fine_tune_budget`. Every level
        weighs the classes as ``config.class_weights`` says, where its loss has a
        cross-entropy term (otherwise unweighted, said in ``notes``).
    kmeans, config
        Settings of the pseudo-labels and of the loop; ``None`` for the thesis' values.
    slices
        Slices level 1 trains on; ``None``: every slice with lung.
    new_slices
        Slices added from level 2 on (labelled by the level before); ``None``: the other
        slices of the stack.
    preprocess
        Network input preparation; ``None`` chooses from the stack (a CT window for HU).
    classes
        Names of the label values; ``None``: background, lung, ground-glass, ...
    callback
        Receives each level's :class:`TrainEvent` records, their message starting with
        ``level N``.
    stop_event
        When set, the loop stops (within one training step); the level being trained is
        discarded and ``stopped`` is set.
    on_level
        Called with each finished level, level 0 first, collapsed levels included.

    Returns
    -------
    SelfLearningResult
        Every level (the result is ``final``), the k-means steps and the notes.

    Raises
    ------
    NumsnetError
        A bad stack (see :func:`kmeans_pseudolabels`), slices outside the stack, no
        slice to train on, a model or class table that does not have ``k + 1`` values.
    """
    config = config or SelfLearningConfig()
    kmeans = kmeans or KMeansConfig()
    stop = stop_event or threading.Event()
    k = kmeans.k
    values = model.num_classes + (0 if model.exclusive else 1)
    if values != k + 1:
        raise NumsnetError(
            f"The model predicts {values} label values but k-means makes {k + 1} "
            f"(background and k = {k} classes).",
            f"Use num_classes = {k + 1} (exclusive classes) or {k} (independent planes).",
        )
    classes = classes or ClassTable.from_names(class_names(k))
    if classes.num_values != k + 1:
        raise NumsnetError(
            f"The class table names {classes.num_values} label values; k-means makes {k + 1}.",
            "Name the background and each of the k classes.",
        )
    names = list(classes.names)

    pseudo = kmeans_pseudolabels(stack, kmeans)
    image = np.asarray(stack)
    n_slices = image.shape[0]
    chosen = _check_slices(slices, n_slices, "Slices")
    if chosen is None:
        chosen = np.flatnonzero(pseudo.lung_mask.any(axis=(1, 2)))
    if chosen.size == 0:
        raise NumsnetError("No slice to train level 1 on.", "Give at least one slice.")
    added = _check_slices(new_slices, n_slices, "New slices")
    if added is None:
        added = np.setdiff1d(np.arange(n_slices), chosen)
    added = np.setdiff1d(added, chosen)
    evaluated = np.union1d(chosen, added)
    rows = np.zeros(n_slices, dtype=bool)
    rows[evaluated] = True
    lung = pseudo.lung_mask & rows[:, None, None]
    whole = np.broadcast_to(rows[:, None, None], image.shape)

    def finish(level: int, labels: np.ndarray, ckpt: Checkpoint | None, frozen=()) -> LevelResult:
        return LevelResult(
            level,
            labels.astype(np.uint8, copy=False),
            ckpt,
            label_fractions(labels, lung, names),
            label_fractions(labels, whole, names),
            frozen=tuple(frozen),
        )

    notes = list(pseudo.notes)
    training, weighting = _weighted(training, config.class_weights, model.exclusive)
    if weighting:
        notes.append(weighting)
    result = SelfLearningResult([], pseudo, classes, chosen, added, notes=notes)
    reference = finish(0, pseudo.labels, None)
    result.levels.append(reference)
    if on_level is not None:
        on_level(reference)
    predict_config = config.predict or PredictConfig(device=training.device)

    for level in range(1, config.levels + 1):
        if stop.is_set():
            result.stopped = True
            notes.append(f"Stopped before level {level}.")
            break
        emit = _level_callback(callback, level)
        previous = result.levels[-1]
        frozen: list[str] = []
        if level == 1:
            data = AnnotatedStack(image, pseudo.labels, chosen, name="stack")
            ckpt = train(
                data, model, training, preprocess, classes, callback=emit, stop_event=stop
            )
        else:
            assert previous.checkpoint is not None
            level1 = result.levels[1].checkpoint
            assert level1 is not None
            ckpt, frozen = _fine_tune(
                previous.checkpoint,
                image,
                previous.labels,
                evaluated,
                fine_tune_budget(training, config, int(level1.record.get("steps_done", 0))),
                config,
                classes,
                emit,
                stop,
            )
        ckpt.record["self_learning"] = {
            "level": level,
            "frozen_layers": frozen,
            "learning_rate": ckpt.train_config.learning_rate if ckpt.train_config else None,
        }
        if ckpt.record.get("state") == TrainState.STOPPED.value:
            result.stopped = True
            notes.append(f"Stopped while training level {level}; it is discarded.")
            break
        labels = predict(ckpt, image, predict_config).labels
        current = finish(level, labels, ckpt, frozen)
        current.reason = collapse_reason(reference, current, config)
        current.collapsed = bool(current.reason)
        result.levels.append(current)
        if on_level is not None:
            on_level(current)
        if current.collapsed:
            notes.append(f"{current.reason} Kept level {level - 1}.")
            break
    return result


def fine_tune_budget(
    training: TrainConfig, config: SelfLearningConfig, level1_steps: int
) -> TrainConfig:
    """The training of levels 2 and above.

    ``training`` at ``config.fine_tune_lr_factor`` times its learning rate, for
    ``config.fine_tune_steps`` steps or ``config.fine_tune_epochs`` epochs when one is
    set; otherwise for ``level1_steps`` steps (the optimiser steps level 1 ran) where
    ``training`` has a step budget, and for ``training.epochs`` where it counts epochs.
    """
    tuned = training.replace(learning_rate=training.learning_rate * config.fine_tune_lr_factor)
    if config.fine_tune_steps is not None:
        return tuned.replace(steps=config.fine_tune_steps, steps_per_slice=0, min_steps=0)
    if config.fine_tune_epochs is not None:
        return tuned.replace(epochs=config.fine_tune_epochs, steps=0, steps_per_slice=0)
    if training.steps > 0 and level1_steps > 0:
        return tuned.replace(steps=level1_steps, steps_per_slice=0, min_steps=0)
    return tuned


def _weighted(
    training: TrainConfig, weights: ClassWeightsName, exclusive: bool
) -> tuple[TrainConfig, str]:
    """``training`` with the loop's class weighting, and a note when the run cannot take
    it (a loss without a cross-entropy term, or independent classes)."""
    if weights == "none" or takes_class_weights(training.loss, exclusive):
        return training.replace(class_weights=weights), ""
    why = (
        f"the {training.loss!r} loss has no cross-entropy term"
        if exclusive
        else "the model's classes are independent planes"
    )
    return training.replace(class_weights="none"), (
        f"The classes are not weighted: {why}, and the smallest k-means classes may be lost "
        "(the 'dice_ce' loss with exclusive classes weighs them)."
    )


def _fine_tune(
    previous: Checkpoint,
    image: np.ndarray,
    labels: np.ndarray,
    slices: np.ndarray,
    training: TrainConfig,
    config: SelfLearningConfig,
    classes: ClassTable,
    callback: ProgressCallback | None,
    stop: threading.Event,
) -> tuple[Checkpoint, list[str]]:
    """Train ``previous``'s weights on ``labels`` of ``slices`` with the first layers frozen.

    Adam starts afresh (as a model recompiled in Keras does); only the unfrozen
    parameters get gradients, so only they move.
    """
    data = AnnotatedStack(image, labels, slices, name="stack")
    train_data, _ = build_training_data([data], previous.model_config, previous.preprocess)
    net = previous.build_model()
    frozen = freeze_first_layers(net, config.frozen_layers)
    record = {"fine_tuned_from": dict(previous.record.get("self_learning", {}))}
    result = fit(
        net,
        train_data,
        training,
        class_names=classes.names,
        callback=callback,
        stop_event=stop,
        record=record,
    )
    result.record["annotated"] = {"stack": [int(i) for i in train_data[0].slice_index]}
    ckpt = Checkpoint.from_model(
        result.model,
        preprocess=previous.preprocess,
        class_names=list(classes.names),
        train_config=training,
        optimizer_state=result.optimizer_state,
        record=result.record,
    )
    return ckpt, frozen
