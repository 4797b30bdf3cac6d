"""Validation: Dice per class of the held-out annotated slices, during training, and the
post-processing those slices choose after it."""

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


def foreground_score(val_dice: dict[str, float], names: Sequence[str], exclusive: bool) -> float:
    """Mean validation Dice over the classes, the background left out; NaN if none."""
    skip = {names[0]} if exclusive and names else set()
    values = [v for k, v in val_dice.items() if k not in skip]
    return float(np.mean(values)) if values else float("nan")


def evaluate_stacks(
    model: nn.Module,
    stacks: Sequence[StackSample | TrainingStack],
    names: Sequence[str],
    device: torch.device,
    direction: Direction = "forward",
) -> dict[str, float]:
    """Dice per class of ``model`` on preprocessed, labelled ``stacks`` (validation).

    ``names`` has one entry per label value, background first; classes absent from
    both prediction and reference are left out. Sequence and 3D models predict each
    whole stack in order (``direction``, as at inference), and are scored on its
    annotated slices.
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
        config = PredictConfig(direction=direction, batch_size=8)
        prob = predict_stack(model, images, config, device=device, slices=slices)
        predicted = probabilities_to_labels(prob, cfg.exclusive)
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
