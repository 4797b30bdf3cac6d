"""The few-shot loop on a fully labelled stack: plan, train, predict, score the unseen slices.

This is what ``numsnet demo`` and the benchmarks run. No napari, no Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_numsnet.config import (
    ModelConfig,
    PredictConfig,
    PreprocessConfig,
    SamplingConfig,
    TrainConfig,
)
from napari_numsnet.data.slices import SliceSplit
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.engine.events import ProgressCallback, TrainState
from napari_numsnet.engine.predict import Prediction
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.workflows.prediction import evaluate, predict
from napari_numsnet.workflows.stacks import AnnotatedStack, plan_slices
from napari_numsnet.workflows.training import train


@dataclass
class LoopResult:
    """What :func:`annotate_train_predict` did and measured."""

    checkpoint: Checkpoint
    prediction: Prediction
    split: SliceSplit
    unseen: np.ndarray
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def state(self) -> TrainState:
        return TrainState(self.checkpoint.record.get("state", "done"))


def annotate_train_predict(
    image: np.ndarray,
    reference: np.ndarray,
    classes: ClassTable,
    model: ModelConfig,
    training: TrainConfig,
    preprocess: PreprocessConfig | None = None,
    sampling: SamplingConfig = SamplingConfig(),
    callback: ProgressCallback | None = None,
) -> LoopResult:
    """The few-shot loop on a fully labelled stack, keeping only the planned slices.

    The reference labels of the planned slices play the annotation; the model is
    trained on them, predicts the whole stack, and is scored on the slices it never saw
    (neither the training slices nor the validation slices that chose its weights).
    """
    split = plan_slices(len(image), sampling)
    annotated = np.union1d(split.train, split.val)
    stack = AnnotatedStack(image, reference, annotated, split.val, name="stack")
    checkpoint = train(stack, model, training, preprocess, classes, callback=callback)
    prediction = predict(checkpoint, image, PredictConfig(device=training.device))
    # Scored on the slices neither trained on nor used to choose the best weights.
    unseen = np.setdiff1d(np.arange(len(image)), annotated)
    scores = evaluate(prediction.labels, reference, classes, unseen)
    return LoopResult(checkpoint, prediction, split, unseen, scores)
