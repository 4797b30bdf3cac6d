"""Self-learning settings, per-level results and the collapse guard (see ``selflearn``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_numsnet.config import ClassWeightsName, PredictConfig
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.pseudolabel.records import PseudoLabelResult

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
    fine_tune_steps, fine_tune_epochs
        The budget of levels 2 and above: a number of optimiser steps, or of epochs over
        their slices (at most one of the two). With neither, a level 2+ runs as many steps
        as level 1 ran where the training has a step budget (the plugin's presets: the
        budget is not grown by the slices level 2 adds: on the CT sample that is 1,800
        steps instead of 4,500, for a better lung Dice in 3 of 3 seeds,
        ``benchmarks/README.md``), and ``training.epochs`` where it counts epochs (the
        thesis).
    predict
        How the levels predict; ``None`` predicts forward on ``training.device``.
    class_weights
        The cross-entropy's class weighting of every level (:attr:`TrainConfig.class_weights`):
        ``frequency`` (the default) so that the small k-means classes are learned (without
        it level 1 loses them on the CT sample and the guard stops the loop), ``none`` as
        the thesis trains. Used where the training loss has a cross-entropy term.
    """

    levels: int = 2
    fine_tune_lr_factor: float = 0.01
    frozen_layers: int = 2
    min_class_fraction: float = 0.01
    collapse_ratio: float = 0.1
    fine_tune_steps: int | None = None
    fine_tune_epochs: int | None = None
    predict: PredictConfig | None = None
    class_weights: ClassWeightsName = "frequency"

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
        for name, value in (
            ("fine_tune_steps", self.fine_tune_steps),
            ("fine_tune_epochs", self.fine_tune_epochs),
        ):
            if value is not None and (int(value) != value or value < 1):
                raise NumsnetError(
                    f"{name} = {value} trains nothing.",
                    "Give a whole number of at least 1, or None for level 1's budget.",
                )
        if self.fine_tune_steps is not None and self.fine_tune_epochs is not None:
            raise NumsnetError(
                "fine_tune_steps and fine_tune_epochs are both set.",
                "Give the budget of levels 2+ in steps or in epochs, not both.",
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
