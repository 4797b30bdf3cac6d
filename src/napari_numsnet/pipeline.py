"""The annotate-train-predict loop, written out in order.

    volume on disk -> read (array + geometry) -> preprocess -> choose slices to annotate
      -> train (progress events, stop flag) -> predict the stack in order
      -> correct -> retrain -> export (same geometry as the input)

The command line, the napari widgets, the benchmarks and the tests all call these
functions; none of them imports napari or Qt.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch

from napari_numsnet.config import (
    ModelConfig,
    PredictConfig,
    PreprocessConfig,
    Preset,
    SamplingConfig,
    TrainConfig,
)
from napari_numsnet.data.dataset import StackSample, validate_pair
from napari_numsnet.data.hounsfield import looks_like_hounsfield
from napari_numsnet.data.preprocess import Preprocessor
from napari_numsnet.data.slices import SliceSplit, annotated_slices, select_slices
from napari_numsnet.engine import distributed
from napari_numsnet.engine.checkpoint import Checkpoint, check_compatible, transfer_model
from napari_numsnet.engine.device import seed_everything
from napari_numsnet.engine.events import ProgressCallback, TrainState
from napari_numsnet.engine.metrics import SegmentationMetrics
from napari_numsnet.engine.predict import Prediction, predict_volume
from napari_numsnet.engine.trainer import CheckpointCallback, fit
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import create_model, get_spec, scaled_widths

#: Window applied to CT in Hounsfield units before min-max scaling (HU).
CT_WINDOW = (-1000.0, 1000.0)


@dataclass
class AnnotatedStack:
    """One stack with its (partial) annotation.

    Attributes
    ----------
    image
        ``(Z, H, W)`` raw intensities, stack axis first.
    labels
        ``(Z, H, W)`` integer labels; only the ``annotated`` slices are read.
    annotated
        Slices that count as annotated (ground truth, possibly empty); ``None`` means
        every slice with a non-zero label.
    val_slices
        Annotated slices held out for validation (never trained on).
    name
        For messages and records.
    """

    image: np.ndarray
    labels: np.ndarray
    annotated: Sequence[int] | None = None
    val_slices: Sequence[int] = ()
    name: str = "stack"


def default_preprocess(
    image: np.ndarray, base: PreprocessConfig | None = None
) -> PreprocessConfig:
    """The preprocessing for ``image``: a CT window when it is in HU, min-max scaling."""
    base = base or PreprocessConfig()
    if base.window is None and looks_like_hounsfield(image):
        return base.replace(window=CT_WINDOW)
    return base


def model_for_preset(
    name: str, num_classes: int, preset: Preset, in_channels: int = 1, exclusive: bool = True
) -> ModelConfig:
    """The model ``name`` at the preset's size (the paper's widths times ``width_scale``)."""
    return ModelConfig(
        get_spec(name).name,
        in_channels=in_channels,
        num_classes=num_classes,
        widths=scaled_widths(name, preset.width_scale),
        exclusive=exclusive,
    )


def plan_slices(n_slices: int, sampling: SamplingConfig = SamplingConfig()) -> SliceSplit:
    """Which slices to annotate for training and validation (NUMSnet paper, 10% default)."""
    return select_slices(n_slices, sampling)


def _check_stack_shapes(stack: AnnotatedStack) -> None:
    """Refuse a single image, or labels of another shape than the image."""
    image, labels = np.asarray(stack.image), np.asarray(stack.labels)
    if image.ndim != 3:
        raise NumsnetError(
            f"The image of {stack.name} has shape {image.shape}; a stack (Z, H, W) is needed.",
            "Open the whole volume, not a single slice.",
        )
    if image.shape != labels.shape:
        raise NumsnetError(
            f"The image stack {stack.name} has shape {image.shape} but the labels have "
            f"{labels.shape}.",
            "Use labels drawn on this very image (same number of slices, rows, columns).",
        )


def _stack_sample(
    stack: AnnotatedStack, slices: np.ndarray, pre: Preprocessor, images: np.ndarray
) -> StackSample:
    """The whole preprocessed stack; labels only on ``slices``, which alone count."""
    annotated = np.zeros(len(images), dtype=bool)
    annotated[slices] = True
    labels = np.zeros(images.shape, dtype=np.int64)
    labels[slices] = pre.prepare_labels(np.asarray(stack.labels)[slices].astype(np.int64))
    return StackSample(images, labels, annotated, stack.name)


def build_training_data(
    stacks: Sequence[AnnotatedStack],
    model: ModelConfig,
    preprocess: PreprocessConfig,
) -> tuple[list[StackSample], list[StackSample]]:
    """Preprocess the annotated slices of each stack into training and validation data.

    Only the annotated slices are read from ``labels`` (and checked against the number of
    classes): the other slices may hold anything. Each stack is kept whole, with a mask
    of the slices that count: the NUMSnet family and 3D models see the unannotated
    neighbours, and a semi-supervised term may use the unannotated slices' images.
    """
    train, val = [], []
    for stack in stacks:
        _check_stack_shapes(stack)
        annotated = annotated_slices(stack.labels, stack.annotated)
        validate_pair(
            np.asarray(stack.image)[annotated],
            np.asarray(stack.labels)[annotated],
            model.num_classes,
            model.exclusive,
        )
        held_out = np.intersect1d(annotated, np.asarray(stack.val_slices, dtype=int))
        fit_slices = np.setdiff1d(annotated, held_out)
        if len(fit_slices) == 0:
            raise NumsnetError(
                f"Every annotated slice of {stack.name} is held out for validation.",
                "Annotate more slices or hold out fewer for validation.",
            )
        pre = Preprocessor(preprocess)
        images = pre.prepare(stack.image)
        train.append(_stack_sample(stack, fit_slices, pre, images))
        if len(held_out):
            val.append(_stack_sample(stack, held_out, pre, images))
    return train, val


def train(
    stacks: AnnotatedStack | Sequence[AnnotatedStack],
    model: ModelConfig = ModelConfig(),
    training: TrainConfig = TrainConfig(),
    preprocess: PreprocessConfig | None = None,
    classes: ClassTable | None = None,
    resume: Checkpoint | None = None,
    transfer_from: Checkpoint | None = None,
    callback: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
    on_checkpoint: CheckpointCallback | None = None,
) -> Checkpoint:
    """Train a model on the annotated slices of one or more stacks.

    Parameters
    ----------
    stacks
        The annotated stack(s).
    model
        The network (ignored when resuming: the checkpoint's model continues).
    training
        Epochs to run now, batch size, learning rate, loss, device, seed.
    preprocess
        ``None`` chooses from the first image (a CT window for HU data); a resumed or
        transferred checkpoint keeps its own.
    classes
        Class table; defaults to ``background, class 1, ...``.
    resume
        Continue training this checkpoint (same classes) with the current annotations.
    transfer_from
        Start from this checkpoint's layers with a new head (the number of classes may
        differ).
    callback, stop_event, on_checkpoint
        Progress events, the stop flag and the periodic checkpoint hook, passed to
        :func:`~napari_numsnet.engine.fit`.

    Returns
    -------
    Checkpoint
        Weights, configs, class names and the training record (``record["state"]`` is
        ``"stopped"`` when the stop flag ended it early).
    """
    stacks = [stacks] if isinstance(stacks, AnnotatedStack) else list(stacks)
    if not stacks:
        raise NumsnetError("No stack to train on.", "Give at least one annotated stack.")
    if distributed.active():  # under torchrun: this process's share of whole stacks
        stacks = distributed.shard(
            stacks,
            torch.distributed.get_rank(),
            torch.distributed.get_world_size(),
            sizes=[len(annotated_slices(s.labels, s.annotated)) for s in stacks],
        )
    record, optimizer_state = {}, None
    seed_everything(training.seed)  # the seed also fixes the initial weights
    if resume is not None:
        if classes is not None:
            exclusive = resume.model_config.exclusive
            check_compatible(resume, classes.num_values - (0 if exclusive else 1))
        classes = classes or ClassTable.from_names(resume.class_names)
        model = resume.model_config
        preprocess = resume.preprocess
        net = resume.build_model()
        record, optimizer_state = resume.record, resume.optimizer_state
    elif transfer_from is not None:
        preprocess = transfer_from.preprocess
        net = transfer_model(transfer_from, model.num_classes)
        model = cast(ModelConfig, net.config)
        record = {"transferred_from": transfer_from.model_config.name}
    else:
        net = create_model(model)
        model = cast(ModelConfig, net.config)
    preprocess = preprocess or default_preprocess(stacks[0].image)
    values = model.num_classes if model.exclusive else model.num_classes + 1
    classes = classes or ClassTable.default(values)
    if classes.num_values != values:
        raise NumsnetError(
            f"The class table names {classes.num_values} label values but the model "
            f"predicts {values}.",
            "Make the class table and the model's number of classes agree.",
        )
    train_data, val_data = build_training_data(stacks, model, preprocess)
    result = fit(
        net,
        train_data,
        training,
        val_stacks=val_data,
        class_names=classes.names,
        callback=callback,
        stop_event=stop_event,
        optimizer_state=optimizer_state,
        record=record,
        on_checkpoint=on_checkpoint,
    )
    result.record["annotated"] = {
        s.name: [int(i) for i in t.slice_index] for s, t in zip(stacks, train_data, strict=True)
    }
    return Checkpoint.from_model(
        result.model,
        preprocess=preprocess,
        class_names=list(classes.names),
        train_config=training,
        optimizer_state=result.optimizer_state,
        record=result.record,
    )


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
    :class:`~napari_numsnet.cascade.Cascade`; it predicts the whole stack and the slices
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
        config,
        slice_range,
        return_probabilities=probabilities,
    )


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


# The sample loader and the file predictions live in workflows/; kept here for importers.
from napari_numsnet.workflows.predict_files import (  # noqa: E402
    is_stack,
    make_predictor,
    output_name,
    predict_files,
    prediction_targets,
    stack_files,
    write_probabilities,
)
from napari_numsnet.workflows.sample import Sample, load_sample, sample_dir  # noqa: E402

__all__ = [
    "CT_WINDOW",
    "AnnotatedStack",
    "LoopResult",
    "Sample",
    "annotate_train_predict",
    "build_training_data",
    "default_preprocess",
    "evaluate",
    "is_stack",
    "load_sample",
    "make_predictor",
    "model_for_preset",
    "output_name",
    "plan_slices",
    "predict",
    "predict_files",
    "prediction_targets",
    "sample_dir",
    "stack_files",
    "train",
    "write_probabilities",
]
