"""Validation: Dice per class of the held-out annotated slices, during training, and the
post-processing those slices choose after it.

A class annotated on training slices but shown by no validation slice (the lungs of a CT
stack whose one held-out slice lies below them) would be invisible to the choice of the
best weights; such classes are scored on their training slices instead
(:func:`uncovered_classes`), so that no annotated class can be forgotten unnoticed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from napari_numsnet.config import Direction, PredictConfig
from napari_numsnet.data.dataset import StackSample, TrainingStack
from napari_numsnet.engine import distributed
from napari_numsnet.engine.metrics import SegmentationMetrics, num_label_values
from napari_numsnet.engine.postprocess import ComponentChoice, choose_largest_component
from napari_numsnet.engine.predict import predict_stack, probabilities_to_labels
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models.base import ModelKind


def label_names(names: Sequence[str] | None, num_classes: int, exclusive: bool) -> list[str]:
    """One name per label value, background first (``K`` names, see ``num_label_values``)."""
    k = num_label_values(num_classes, exclusive)
    given = list(names or [])
    return [
        given[v] if v < len(given) else ("background" if v == 0 else f"class {v}")
        for v in range(k)
    ]


def foreground_score(
    val_dice: dict[str, float],
    names: Sequence[str],
    exclusive: bool,
    train_dice: dict[str, float] | None = None,
) -> float:
    """Mean Dice over the classes, the background left out; NaN if none.

    ``train_dice`` holds the classes no validation slice shows, scored on their training
    slices (:func:`uncovered_classes`); each of its entries counts as one more class. A
    class in both (predicted on a validation slice that does not show it) counts twice:
    its false positives there and how it is learned.
    """
    skip = {names[0]} if exclusive and names else set()
    scores = list(val_dice.items()) + list((train_dice or {}).items())
    values = [v for k, v in scores if k not in skip]
    return float(np.mean(values)) if values else float("nan")


def annotated_values(stacks: Sequence[StackSample | TrainingStack], k: int) -> np.ndarray:
    """``(k,)`` bool: which label values ``0 .. k-1`` the annotated slices of ``stacks`` show."""
    shown = np.zeros(k, dtype=bool)
    for stack in stacks:
        labels = stack.labels[stack.annotated] if isinstance(stack, StackSample) else stack.labels
        values = np.unique(labels)
        shown[values[(values >= 0) & (values < k)]] = True
    return shown


def uncovered_classes(
    train_stacks: Sequence[StackSample | TrainingStack],
    val_stacks: Sequence[StackSample | TrainingStack],
    names: Sequence[str],
    exclusive: bool,
) -> list[str]:
    """The classes annotated on training slices that no validation slice shows.

    Empty without validation slices (the last weights are kept then, so nothing is
    chosen). Under torchrun the slices of every process count.
    """
    k = len(names)
    trained = annotated_values(train_stacks, k).astype(np.float64)
    validated = annotated_values(val_stacks, k).astype(np.float64)
    if distributed.active():
        trained = distributed.all_reduce(trained, "sum")
        validated = distributed.all_reduce(validated, "sum")
    if not validated.any():
        return []
    first = 1 if exclusive else 0  # the background of exclusive classes is never scored
    return [names[v] for v in range(first, k) if trained[v] > 0 and validated[v] == 0]


def stacks_showing(
    stacks: Sequence[StackSample | TrainingStack], classes: Sequence[str], names: Sequence[str]
) -> list[StackSample | TrainingStack]:
    """The stacks among ``stacks`` whose annotated slices show one of ``classes``."""
    wanted = np.isin(np.arange(len(names)), [names.index(c) for c in classes])
    return [s for s in stacks if (annotated_values([s], len(names)) & wanted).any()]


def evaluate_stacks(
    model: nn.Module,
    stacks: Sequence[StackSample | TrainingStack],
    names: Sequence[str],
    device: torch.device,
    direction: Direction = "forward",
    predictions: dict[int, np.ndarray] | None = None,
) -> dict[str, float]:
    """Dice per class of ``model`` on preprocessed, labelled ``stacks`` (validation).

    ``names`` has one entry per label value, background first; classes absent from
    both prediction and reference are left out. Sequence and 3D models predict each
    whole stack in order (``direction``, as at inference), and are scored on its
    annotated slices.

    ``predictions``, when given, keeps each whole-stack prediction by the identity of
    its image array, so that a second call with the same weights (the training slices of
    the same stacks) reuses it instead of predicting the stack again.
    """
    cfg = model.config
    metrics = SegmentationMetrics(num_label_values(cfg.num_classes, cfg.exclusive), names)
    for stack in stacks:
        if cfg.context and isinstance(stack, TrainingStack):
            raise NumsnetError(
                f"Validation stack {stack.name!r} holds only its annotated slices, but the "
                "model takes 2.5D context and needs their neighbours.",
                "Pass the whole stack as a StackSample with its validation slices marked.",
            )
        images, labels, slices = stack.images, stack.labels, None
        if isinstance(stack, StackSample) and model.kind is ModelKind.SLICE:
            # Slices are independent: predict only the ones that are scored (with their
            # neighbours as context where the model takes it).
            slices, labels = np.flatnonzero(stack.annotated), labels[stack.annotated]
        cache = predictions if slices is None else None  # whole stacks only
        if cache is not None and id(images) in cache:
            predicted = cache[id(images)]
        else:
            config = PredictConfig(direction=direction, batch_size=8)
            prob = predict_stack(model, images, config, device=device, slices=slices)
            predicted = probabilities_to_labels(prob, cfg.exclusive)
            if cache is not None:
                cache[id(images)] = predicted
        if isinstance(stack, StackSample) and model.kind is not ModelKind.SLICE:
            # The whole stack is predicted in order (context), scored where annotated.
            predicted, labels = predicted[stack.annotated], labels[stack.annotated]
        metrics.update(predicted, labels)
    if distributed.active():  # every process scored its own shard: add up the counts
        for counts in ("tp", "fp", "fn"):
            summed = distributed.all_reduce(getattr(metrics, counts), "sum")
            setattr(metrics, counts, summed.astype(np.int64))
    return {
        name: values["dice"]
        for name, values in metrics.summary().items()
        if not np.isnan(values["dice"])
    }


def choose_postprocessing(
    model: nn.Module,
    stacks: Sequence[StackSample],
    device: torch.device,
    direction: Direction = "forward",
) -> ComponentChoice:
    """The classes whose largest 3D component alone is to be kept, chosen on ``stacks``.

    Each validation stack is predicted whole, in order, as at inference (at the model's
    input size), and each class is tried with and without its smaller components on
    the stack's held-out slices
    (:func:`~napari_numsnet.engine.postprocess.choose_largest_component`).
    """
    cfg = model.config
    predicted, reference, scored = [], [], []
    for stack in stacks:
        config = PredictConfig(direction=direction, batch_size=8)
        prob = predict_stack(model, stack.images, config, device=device)
        predicted.append(probabilities_to_labels(prob, cfg.exclusive))
        reference.append(stack.labels)
        scored.append(np.asarray(stack.annotated, dtype=bool))
    values = num_label_values(cfg.num_classes, cfg.exclusive)
    return choose_largest_component(predicted, reference, scored, values)
