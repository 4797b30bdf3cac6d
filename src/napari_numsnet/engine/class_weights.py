"""Weights of the classes in the cross-entropy, from how often each one is annotated.

The k-means classes of the self-learning loop can be tiny: on the shipped CT sample the
"consolidation" class is 128 voxels of a 30-slice stack (2.5% of the lung, about 10 pixels
a slice) and "ground-glass" 284. Unweighted, level 1 never predicts them and the loop's
collapse guard stops it. ``TrainConfig.class_weights = "frequency"`` gives each class
the weight ``(n_max / n_c) ** (1 / 3)``, where ``n_c`` counts the annotated pixels of
class ``c`` and ``n_max`` those of the most frequent class: a class 1,000 times rarer
than the background weighs 10 times as much (``benchmarks/README.md``, section 3).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import get_args

import numpy as np
import torch

from napari_numsnet.config import ClassWeightsName, TrainConfig
from napari_numsnet.data.dataset import StackSample, TrainingStack
from napari_numsnet.engine import distributed
from napari_numsnet.engine.losses import LossFn, get_loss
from napari_numsnet.errors import NumsnetError

#: The class weightings of ``TrainConfig.class_weights``.
CLASS_WEIGHTINGS: tuple[str, ...] = get_args(ClassWeightsName)

#: Losses with a cross-entropy term, the ones a class weight applies to.
WEIGHTED_LOSSES: tuple[str, ...] = ("ce", "dice_ce")

#: The power of the inverse frequency: 1 would balance the classes fully (weights in the
#: thousands for the CT sample's smallest k-means class), 1/3 keeps them near 10-15.
_EXPONENT = 1.0 / 3.0


def annotated_pixel_counts(
    stacks: Sequence[StackSample | TrainingStack], num_classes: int
) -> np.ndarray:
    """Pixels of each label value on the annotated slices of ``stacks``.

    Returns
    -------
    numpy.ndarray
        ``(num_classes,)`` int64; values at or above ``num_classes`` are not counted.
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    for stack in stacks:
        labels = stack.labels[stack.annotated] if isinstance(stack, StackSample) else stack.labels
        values = labels[(labels >= 0) & (labels < num_classes)]
        counts += np.bincount(values.ravel(), minlength=num_classes)[:num_classes]
    return counts


def frequency_weights(counts: np.ndarray) -> torch.Tensor:
    """``(n_max / n_c) ** (1 / 3)`` per class, 1 for a class with no annotated pixel.

    Parameters
    ----------
    counts
        ``(C,)`` annotated pixels per label value.

    Returns
    -------
    torch.Tensor
        ``(C,)`` float32, 1 for the most frequent class, above 1 for the rarer ones.
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.ones_like(counts)
    if present.any():
        weights[present] = (counts.max() / counts[present]) ** _EXPONENT
    return torch.as_tensor(weights, dtype=torch.float32)


def takes_class_weights(loss: str, exclusive: bool) -> bool:
    """Whether a run with ``loss`` can weigh its classes: a cross-entropy term
    (:data:`WEIGHTED_LOSSES`) over exclusive classes."""
    return loss in WEIGHTED_LOSSES and exclusive


def class_weights_for(
    config: TrainConfig,
    stacks: Sequence[StackSample | TrainingStack],
    num_classes: int,
    exclusive: bool,
) -> torch.Tensor | None:
    """The cross-entropy's class weights of a run, or ``None`` when ``config`` asks for none.

    Under torchrun the counts are summed over the processes, so every process weights
    alike.

    Raises
    ------
    NumsnetError
        Weights asked for a loss without a cross-entropy term, or for independent classes.
    """
    if config.class_weights == "none":
        return None
    if config.class_weights not in CLASS_WEIGHTINGS:
        raise NumsnetError(
            f"Unknown class weighting {config.class_weights!r}.",
            f"Choose one of: {', '.join(CLASS_WEIGHTINGS)}.",
        )
    if not takes_class_weights(config.loss, exclusive):
        raise NumsnetError(
            f"Class weights apply to the cross-entropy of exclusive classes; this run uses "
            f"the {config.loss!r} loss" + ("" if exclusive else " on independent classes") + ".",
            f"Use the loss {' or '.join(repr(n) for n in WEIGHTED_LOSSES)} with exclusive "
            "classes, or class_weights='none'.",
        )
    counts = annotated_pixel_counts(stacks, num_classes)
    counts = np.asarray(distributed.all_reduce(counts, "sum"), dtype=np.int64)
    return frequency_weights(counts)


def run_loss(
    config: TrainConfig,
    stacks: Sequence[StackSample | TrainingStack],
    num_classes: int,
    exclusive: bool,
) -> tuple[LossFn, torch.Tensor | None]:
    """The loss of a run, its class weights bound in, and the weights (``None``: none)."""
    weights = class_weights_for(config, stacks, num_classes, exclusive)
    loss_fn = get_loss(config.loss)
    if weights is None:
        return loss_fn, None
    return functools.partial(loss_fn, class_weights=weights), weights
