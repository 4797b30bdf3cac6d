"""Training on annotated stacks: a new model, a resumed checkpoint or a transferred one.

No napari, no Qt.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import cast

import torch

from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.data.slices import annotated_slices
from napari_numsnet.engine import distributed
from napari_numsnet.engine.checkpoint import Checkpoint, check_compatible, transfer_model
from napari_numsnet.engine.device import seed_everything, select_device
from napari_numsnet.engine.events import ProgressCallback
from napari_numsnet.engine.postprocess import ComponentChoice
from napari_numsnet.engine.recipe import takes_semi_supervised
from napari_numsnet.engine.trainer import CheckpointCallback, fit
from napari_numsnet.engine.validation import choose_postprocessing
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import create_model
from napari_numsnet.workflows.stacks import (
    AnnotatedStack,
    as_stack_list,
    build_training_data,
    default_preprocess,
)


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
    stacks = as_stack_list(stacks)
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
    training, skipped = semi_supervised_for(net, training)
    if skipped:
        record = {**record, "semi_supervised_skipped": skipped}
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
    if val_data and not distributed.active():  # under torchrun each process holds a shard
        result.record["largest_component"] = _component_record(
            choose_postprocessing(
                result.model,
                val_data,
                select_device(training.device),
                training.prediction_direction,
            ),
            classes.names,
        )
        result.model.cpu()
    return Checkpoint.from_model(
        result.model,
        preprocess=preprocess,
        class_names=list(classes.names),
        train_config=training,
        optimizer_state=result.optimizer_state,
        record=result.record,
    )


def semi_supervised_for(net: torch.nn.Module, training: TrainConfig) -> tuple[TrainConfig, str]:
    """``training`` with its semi-supervised term where ``net`` takes one, else without.

    The term (a preset may switch it on) teaches a slice model with exclusive classes
    its own confident labels on the unannotated slices; the NUMSnet family, the 3D model
    and independent (sigmoid) classes train without it here, as the 2.5D context of a
    preset applies to slice models only. Returns the recipe and, when the term was
    dropped, why (for the training record); ``fit`` itself refuses the term for them.
    """
    if training.semi_supervised <= 0:
        return training, ""
    config = net.config
    if takes_semi_supervised(net.kind, config.exclusive):
        return training, ""
    why = f"{config.name} is a {net.kind.value} model" + (
        "" if config.exclusive else " with independent classes"
    )
    return training.replace(semi_supervised=0.0), why


def _component_record(choice: ComponentChoice, names: Sequence[str]) -> dict:
    """The post-processing choice as the training record keeps it (plain JSON values)."""
    return {
        "classes": list(choice.classes),
        "dice_without": {names[v]: round(d, 4) for v, d in choice.dice_without.items()},
        "dice_with": {names[v]: round(d, 4) for v, d in choice.dice_with.items()},
    }
