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
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from napari_numsnet.config import ModelConfig, PredictConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.engine.events import ProgressCallback, TrainEvent, TrainState
from napari_numsnet.engine.trainer import fit
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models.base import ModelKind
from napari_numsnet.pipeline import AnnotatedStack, build_training_data, predict, train

from .kmeans import kmeans_pseudolabels
from .records import KMeansConfig, PseudoLabelResult

#: Names of the k-means classes 1, 2, 3 (thesis 4.4.1); further clusters are numbered.
CLUSTER_NAMES = ("lung", "ground-glass", "consolidation")


@dataclass(frozen=True)
class SelfLearningConfig:
    """Settings of the self-learning loop.

    Parameters
    ----------
    levels
        Trained levels after the k-means labels (thesis: 2).
    fine_tune_lr_factor
        Learning rate of levels 2 and above, as a fraction of the level-1 rate
        (thesis: 9.8e-6 / 9.8e-4 = 0.01). Not compounded: every fine-tuning level uses
        ``training.learning_rate * fine_tune_lr_factor``.
    frozen_layers
        Layers with weights, counted from the input, frozen from level 2 on (thesis: 2).
    min_class_fraction
        Collapse guard: classes covering at most this fraction of the lung in the k-means
        labels are not watched; a class covering more than ``1 - min_class_fraction`` of
        the slices counts as "all one class".
    collapse_ratio
        Collapse guard: a watched class collapses when its share of the lung falls below
        this fraction of its k-means share.
    fine_tune_epochs
        Epochs of levels 2 and above; ``None`` takes ``training.epochs``.
    predict
        How the levels predict; ``None`` predicts forward on ``training.device``.
    """

    levels: int = 2
    fine_tune_lr_factor: float = 0.01
    frozen_layers: int = 2
    min_class_fraction: float = 0.01
    collapse_ratio: float = 0.1
    fine_tune_epochs: int | None = None
    predict: PredictConfig | None = None

    def __post_init__(self) -> None:
        if int(self.levels) != self.levels or self.levels < 1:
            raise NumsnetError(
                f"levels = {self.levels} trains no level.",
                "Use an integer of at least 1 (the thesis uses 2).",
            )
        if not 0.0 < self.fine_tune_lr_factor <= 1.0:
            raise NumsnetError(
                f"fine_tune_lr_factor = {self.fine_tune_lr_factor} is not a reduction.",
                "Give a factor in (0, 1] (the thesis uses 0.01).",
            )
        if int(self.frozen_layers) != self.frozen_layers or self.frozen_layers < 0:
            raise NumsnetError(
                f"frozen_layers = {self.frozen_layers} is not a number of layers.",
                "Give an integer of at least 0 (the thesis freezes 2).",
            )
        if not 0.0 <= self.min_class_fraction < 0.5 or not 0.0 < self.collapse_ratio <= 1.0:
            raise NumsnetError(
                f"min_class_fraction = {self.min_class_fraction} and collapse_ratio = "
                f"{self.collapse_ratio} cannot guard against collapse.",
                "Use 0 <= min_class_fraction < 0.5 and 0 < collapse_ratio <= 1.",
            )
        if self.fine_tune_epochs is not None and self.fine_tune_epochs < 1:
            raise NumsnetError(
                f"fine_tune_epochs = {self.fine_tune_epochs} trains nothing.",
                "Give at least 1, or None for the training config's epochs.",
            )


@dataclass
class LevelResult:
    """One level of the loop.

    Attributes
    ----------
    level
        0 for the k-means pseudo-labels, 1, 2, ... for the trained levels.
    labels
        ``(Z, H, W) uint8`` the level's labels of the whole stack: the k-means labels for
        level 0, the model's prediction otherwise.
    checkpoint
        The level's model; ``None`` for level 0.
    class_fractions
        Class name -> share of the k-means lung voxels of the evaluated slices
        (``slices`` and ``new_slices``) given that class.
    stack_fractions
        Class name -> share of all voxels of the evaluated slices given that class.
    collapsed
        The collapse guard fired: this level is not the result.
    reason
        Why it collapsed, in words; empty otherwise.
    frozen
        Names of the layers frozen while training this level.
    """

    level: int
    labels: np.ndarray
    checkpoint: Checkpoint | None
    class_fractions: dict[str, float]
    stack_fractions: dict[str, float] = field(default_factory=dict)
    collapsed: bool = False
    reason: str = ""
    frozen: tuple[str, ...] = ()


@dataclass
class SelfLearningResult:
    """Every level of the loop, the k-means step and what happened.

    Attributes
    ----------
    levels
        Level 0 (k-means) first; a collapsed level, if any, is the last entry.
    pseudolabels
        The k-means pipeline's steps (lung mask, centres, notes).
    classes
        Names of the label values.
    slices, new_slices
        ``int64`` slices level 1 trained on, and the other slices levels 2+ added.
    stopped
        The stop flag ended the loop; a level stopped mid-training is discarded.
    notes
        The k-means notes, then what the loop decided.
    """

    levels: list[LevelResult]
    pseudolabels: PseudoLabelResult
    classes: ClassTable
    slices: np.ndarray
    new_slices: np.ndarray
    stopped: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def final(self) -> LevelResult:
        """The last level that did not collapse (level 0 if none trained)."""
        return [lv for lv in self.levels if not lv.collapsed][-1]

    @property
    def collapsed(self) -> bool:
        """Whether the collapse guard stopped the loop."""
        return any(lv.collapsed for lv in self.levels)


def class_names(k: int) -> list[str]:
    """``background`` and the names of the k-means classes ``1..k``."""
    return [
        "background",
        *(CLUSTER_NAMES[v - 1] if v <= 3 else f"cluster {v}" for v in range(1, k + 1)),
    ]


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that hold weights themselves, in the order the input reaches them.

    The order is traced with a dummy forward pass, so it holds for any registry model:
    ``stem.body.0`` (conv), ``stem.body.1`` (BatchNorm), ... for DRSegUNet;
    ``encoders.0.0`` (conv), ``encoders.0.2`` (BatchNorm), ... for the UNet family.
    Modules the pass does not reach follow in registration order.
    """
    layers = {
        name: module
        for name, module in model.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    }
    order: list[str] = []
    hooks = [
        module.register_forward_pre_hook(lambda m, i, name=name: order.append(name))
        for name, module in layers.items()
    ]
    side = 2 * int(model.required_multiple)
    shape: tuple[int, ...] = (1, model.config.in_channels, side, side)
    if model.kind is ModelKind.VOLUME:
        shape = (*shape[:2], int(model.required_depth), side, side)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    called = list(dict.fromkeys(order))
    return [(n, layers[n]) for n in called] + [
        (n, m) for n, m in layers.items() if n not in called
    ]


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """``train()`` of a frozen BatchNorm: it stays in eval mode."""
    return self


def freeze_first_layers(model: nn.Module, n: int) -> list[str]:
    """Freeze the first ``n`` layers with weights of ``model`` in place.

    Their parameters get ``requires_grad = False``; a frozen BatchNorm is put in eval
    mode and its ``train()`` made a no-op, so its running statistics stay as they are.

    Returns
    -------
    list[str]
        The names of the frozen layers.

    Raises
    ------
    NumsnetError
        The model has fewer than ``n`` layers with weights.
    """
    layers = weighted_layers(model)
    if n > len(layers):
        raise NumsnetError(
            f"Cannot freeze {n} layers of a model with {len(layers)} layers with weights.",
            f"Use frozen_layers <= {len(layers)}.",
        )
    for _, module in layers[:n]:
        for param in module.parameters(recurse=False):
            param.requires_grad_(False)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = types.MethodType(_stay_in_eval, module)  # type: ignore[method-assign]
    return [name for name, _ in layers[:n]]


def label_fractions(
    labels: np.ndarray, region: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    """Share of ``region``'s voxels given each label value.

    Parameters
    ----------
    labels
        ``(Z, H, W)`` integer labels, values ``0..len(names) - 1``.
    region
        ``(Z, H, W) bool`` voxels to count.
    names
        Name of each label value.

    Returns
    -------
    dict[str, float]
        Name -> fraction in [0, 1]; all 0 for an empty region.
    """
    counts = np.bincount(labels[region].ravel().astype(np.int64), minlength=len(names))
    total = max(int(counts.sum()), 1)
    return {name: float(counts[v]) / total for v, name in enumerate(names)}


def collapse_reason(reference: LevelResult, level: LevelResult, config: SelfLearningConfig) -> str:
    """Why ``level`` collapsed compared with the k-means ``reference``; empty if it did not.

    A class covering more than ``min_class_fraction`` of the lung in ``reference`` that
    falls below ``collapse_ratio`` times that share, or one class covering more than
    ``1 - min_class_fraction`` of the slices when no class did so in ``reference``.
    """
    for name, before in reference.class_fractions.items():
        after = level.class_fractions.get(name, 0.0)
        if before > config.min_class_fraction and after < config.collapse_ratio * before:
            return (
                f"Level {level.level}: class '{name}' fell from {before:.1%} of the lung in the "
                f"k-means labels to {after:.1%} (below {config.collapse_ratio:g} of its share)."
            )
    full = 1.0 - config.min_class_fraction
    name, share = max(level.stack_fractions.items(), key=lambda item: item[1])
    if share > full and max(reference.stack_fractions.values()) <= full:
        return f"Level {level.level}: class '{name}' covers {share:.1%} of the slices."
    return ""


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
        Level 1's training (thesis: 20 epochs, 9.8e-4). Levels 2+ take it with the
        learning rate times ``config.fine_tune_lr_factor`` and ``config.fine_tune_epochs``.
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
    result = SelfLearningResult([], pseudo, classes, chosen, added, notes=notes)
    reference = finish(0, pseudo.labels, None)
    result.levels.append(reference)
    if on_level is not None:
        on_level(reference)
    predict_config = config.predict or PredictConfig(device=training.device)
    fine_tuning = training.replace(
        learning_rate=training.learning_rate * config.fine_tune_lr_factor,
        epochs=config.fine_tune_epochs or training.epochs,
    )

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
            ckpt, frozen = _fine_tune(
                previous.checkpoint,
                image,
                previous.labels,
                evaluated,
                fine_tuning,
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
