"""Prediction of a stack (or a slice range) with a checkpoint or a cascade, and scoring.

No napari, no Qt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_numsnet.config import PredictConfig
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.engine.metrics import SegmentationMetrics
from napari_numsnet.engine.predict import Prediction, predict_volume
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable


def predict(
    checkpoint: Checkpoint,
    image: np.ndarray,
    config: PredictConfig = PredictConfig(),
    slice_range: tuple[int, int] | None = None,
    probabilities: bool = False,
) -> Prediction:
    """Segment a whole stack (or a slice range) with a trained checkpoint.

    Returns the label map ``(Z, H, W)`` at the original size and, if asked, the
    per-class probabilities ``(C, Z, H, W)``; always the whole stack's size, with 0
    (labels and probabilities) outside ``slice_range``. ``checkpoint`` may also be a
    predictor with ``predict(image, config, probabilities)``, such as a
    :class:`~napari_numsnet.workflows.cascade.Cascade`; it predicts the whole stack and the slices
    outside the range are cleared.
    """
    if not isinstance(checkpoint, Checkpoint):
        result = checkpoint.predict(image, config, probabilities=probabilities)
        if slice_range is None:
            return result
        start, stop = slice_range
        if not 0 <= start < stop <= len(image):
            raise NumsnetError(
                f"Slice range {start}..{stop} is outside the stack of {len(image)} slices.",
                f"Choose 0 <= start < stop <= {len(image)}.",
            )
        outside = np.ones(len(image), dtype=bool)
        outside[start:stop] = False
        labels = result.labels.copy()
        labels[outside] = 0
        probs = result.probabilities
        if probs is not None:
            probs = probs.copy()
            probs[:, outside] = 0
        return Prediction(labels, probs)
    model = checkpoint.build_model()
    return predict_volume(
        model,
        image,
        checkpoint.preprocess,
        with_checkpoint_defaults(config, checkpoint),
        slice_range,
        return_probabilities=probabilities,
    )


def with_checkpoint_defaults(config: PredictConfig, checkpoint: Checkpoint) -> PredictConfig:
    """``config`` with the checkpoint's own choices where it leaves them open (``None``):
    the classes reduced to their largest component, and the direction of travel."""
    if config.largest_component is None:
        config = config.replace(largest_component=checkpoint.largest_component)
    if config.direction is None:
        config = config.replace(direction=checkpoint.direction)
    return config


def evaluate(
    predicted: np.ndarray,
    reference: np.ndarray,
    classes: ClassTable,
    slices: Sequence[int] | None = None,
) -> dict[str, dict[str, float]]:
    """Dice, IoU, precision and recall per class on ``slices`` (all by default)."""
    if predicted.shape != reference.shape:
        raise NumsnetError(
            f"Prediction {predicted.shape} and reference {reference.shape} differ in shape.",
            "Compare a prediction with the labels of the same image.",
        )
    metrics = SegmentationMetrics(classes.num_values, classes.names)
    mask = None
    if slices is not None:
        mask = np.zeros(len(predicted), dtype=bool)
        mask[np.asarray(slices, dtype=int)] = True
    metrics.update(predicted, reference, mask=mask)
    return metrics.summary()
