"""``fit()``: few-shot training in plain PyTorch, as in the NUMSnet paper.

Adam, the paper's augmentation on tensors (so it runs on the GPU too), ordered
batches for the NUMSnet family, mixed precision on CUDA, a seed for reproducibility,
a progress callback, and a stop flag honoured within one step. No Qt, no napari: the
widgets run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_numsnet.config import PredictConfig, TrainConfig
from napari_numsnet.data.augment import random_affine
from napari_numsnet.data.dataset import TrainingStack, count_batches, iter_batches
from napari_numsnet.engine import distributed
from napari_numsnet.engine.device import amp_dtype, describe_device, seed_everything, select_device
from napari_numsnet.engine.events import ProgressCallback, TrainEvent, TrainState
from napari_numsnet.engine.losses import get_loss, supervised_loss
from napari_numsnet.engine.metrics import SegmentationMetrics, num_label_values
from napari_numsnet.engine.predict import predict_stack, probabilities_to_labels
from napari_numsnet.engine.volumetric import (
    VolumeSample,
    count_subvolume_batches,
    iter_subvolumes,
    window_depth,
)
from napari_numsnet.errors import NumsnetError


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    model
        The trained model, on the CPU, in eval mode.
    state
        ``DONE``, or ``STOPPED`` when the stop flag ended the run early.
    record
        The training record (also stored in the checkpoint): per-epoch loss and
        validation Dice, device, throughput, epochs done in total.
    optimizer_state
        Adam's state, to continue training.
    """

    model: nn.Module
    state: TrainState
    record: dict[str, Any]
    optimizer_state: dict[str, Any] = field(default_factory=dict)


def label_names(names: Sequence[str] | None, num_classes: int, exclusive: bool) -> list[str]:
    """One name per label value, background first (``K`` names, see ``num_label_values``)."""
    k = num_label_values(num_classes, exclusive)
    given = list(names or [])
    return [
        given[v] if v < len(given) else ("background" if v == 0 else f"class {v}")
        for v in range(k)
    ]


def check_training_data(stacks: Sequence[TrainingStack], batch_size: int) -> int:
    """Count the annotated slices, refusing too few for one batch."""
    n = sum(len(s) for s in stacks)
    if n == 0:
        raise NumsnetError(
            "There is no annotated slice to train on.",
            "Paint at least one slice (or mark an empty slice as done) before training.",
        )
    if n < batch_size:
        raise NumsnetError(
            f"Only {n} annotated slice(s) but the batch size is {batch_size}.",
            f"Annotate at least {batch_size - n} more slice(s) "
            f"or set the batch size to {n} or less.",
        )
    return n


def evaluate_stacks(
    model: nn.Module,
    stacks: Sequence[TrainingStack],
    names: Sequence[str],
    device: torch.device,
) -> dict[str, float]:
    """Dice per class of ``model`` on preprocessed, labelled ``stacks`` (validation).

    ``names`` has one entry per label value, background first; classes absent from
    both prediction and reference are left out.
    """
    cfg = model.config
    metrics = SegmentationMetrics(num_label_values(cfg.num_classes, cfg.exclusive), names)
    for stack in stacks:
        prob = predict_stack(model, stack.images, PredictConfig(batch_size=8), device=device)
        predicted = probabilities_to_labels(prob, cfg.exclusive)
        if isinstance(stack, VolumeSample):  # whole stack predicted, scored where annotated
            metrics.update(predicted[stack.annotated], stack.labels[stack.annotated])
        else:
            metrics.update(predicted, stack.labels)
    if distributed.active():  # every process scored its own shard: add up the counts
        for counts in ("tp", "fp", "fn"):
            summed = distributed.all_reduce(getattr(metrics, counts), "sum")
            setattr(metrics, counts, summed.astype(np.int64))
    return {
        name: values["dice"]
        for name, values in metrics.summary().items()
        if not np.isnan(values["dice"])
    }


def fit(
    model: nn.Module,
    train_stacks: Sequence[TrainingStack],
    config: TrainConfig,
    val_stacks: Sequence[TrainingStack] = (),
    class_names: Sequence[str] | None = None,
    callback: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
    optimizer_state: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on the annotated slices of ``train_stacks``.

    Parameters
    ----------
    model
        A registry model (``model.config`` and ``model.sequential`` set).
    train_stacks
        Annotated slices per stack, preprocessed, in ascending slice order. Only these
        slices enter the loss. For a volumetric (3D) model, whole stacks as
        :class:`~napari_numsnet.engine.volumetric.VolumeSample` with their annotated slices.
    config
        Epochs (run by this call), batch size, learning rate, loss, augmentation, device.
    val_stacks
        Validation slices; their Dice per class is reported after each epoch.
    class_names
        One name per label value (background first for exclusive classes).
    callback
        Called with a :class:`TrainEvent` at the start, after every step and epoch,
        and at the end.
    stop_event
        When set, training stops before the next step (within one step).
    optimizer_state, record
        From a checkpoint, to continue training where it stopped.

    Returns
    -------
    TrainResult
    """
    n_slices = check_training_data(train_stacks, config.batch_size)
    cfg = model.config
    names = label_names(class_names, cfg.num_classes, cfg.exclusive)
    device = select_device(config.device)
    seed_everything(config.seed)
    rank = torch.distributed.get_rank() if distributed.active() else 0
    generator = torch.Generator().manual_seed(config.seed + rank)
    net = model.to(device)
    # Under torchrun: DistributedDataParallel; ``net`` stays the plain model.
    model = distributed.wrap(net, device) if distributed.active() else net
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate
    loss_fn = get_loss(config.loss)
    dtype = amp_dtype(device) if config.amp else None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    ordered = bool(getattr(net, "sequential", False))

    record = copy.deepcopy(record or {})  # never touch the caller's (a checkpoint's) record
    record.setdefault("epochs", [])
    record.update(
        device=describe_device(device),
        model=cfg.name,
        train_slices=n_slices,
        val_slices=sum(len(s.images) for s in val_stacks),
        class_names=names,
    )
    first_epoch = int(record.get("epochs_done", 0)) + 1
    volumetric = bool(getattr(net, "volumetric", False))
    if volumetric:
        depth = window_depth(net, max(len(s.images) for s in train_stacks))
        steps_per_epoch = count_subvolume_batches(train_stacks, config.batch_size)
    else:
        steps_per_epoch = count_batches(train_stacks, config.batch_size, ordered)
    if distributed.active():  # every process must take the same number of steps
        steps_per_epoch = int(distributed.all_reduce(steps_per_epoch, "min"))
    total = steps_per_epoch * config.epochs
    emit = callback or (lambda event: None)
    stop = stop_event or threading.Event()
    emit(TrainEvent("start", 0, 0, total, message=f"training on {record['device']}"))

    state, step = TrainState.DONE, 0
    run_start = time.perf_counter()
    try:
        for epoch in range(first_epoch, first_epoch + config.epochs):
            model.train()
            losses: list[float] = []
            seen, epoch_start = 0, time.perf_counter()
            carry = None
            batches = (
                iter_subvolumes(train_stacks, depth, config.batch_size, generator)
                if volumetric
                else iter_batches(train_stacks, config.batch_size, ordered, generator)
            )
            for index, batch in enumerate(batches):
                if index == steps_per_epoch:  # shards of unequal size: stop together
                    break
                stopping = stop.is_set()
                if distributed.active():  # one process's stop stops them all
                    stopping = bool(distributed.all_reduce(float(stopping), "sum") > 0)
                if stopping:
                    state = TrainState.STOPPED
                    break
                step_start = time.perf_counter()
                images = batch.images.to(device, non_blocking=True)
                labels = batch.labels.to(device, non_blocking=True)
                mask = getattr(batch, "mask", None)
                mask = None if mask is None else mask.to(device, non_blocking=True)
                if config.augment and not volumetric:  # 3D sub-volumes are not augmented
                    images, labels = random_affine(
                        images, labels, generator, same_for_batch=ordered
                    )
                # The carry is only meaningful when consecutive batches share one geometry.
                use_carry = ordered and batch.continues and not config.augment
                autocast = (
                    torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
                )
                with autocast:
                    out = model(images, carry if use_carry else None)
                    loss = supervised_loss(loss_fn, out, labels, cfg.exclusive, mask)
                if not math.isfinite(float(loss.detach())):
                    raise NumsnetError(
                        f"The training loss became {float(loss.detach())} at epoch {epoch}.",
                        "Lower the learning rate, or check the image for extreme values.",
                    )
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                carry = (
                    None if out.carry is None else {k: v.detach() for k, v in out.carry.items()}
                )
                step += 1
                seen += len(images) * (images.shape[2] if volumetric else 1)  # slices
                losses.append(float(loss.detach()))
                emit(
                    TrainEvent(
                        "step",
                        epoch,
                        step,
                        total,
                        loss=losses[-1],
                        slices_per_second=len(images)
                        / max(time.perf_counter() - step_start, 1e-9),
                    )
                )
            if state is TrainState.STOPPED and not losses:
                break
            elapsed = time.perf_counter() - epoch_start
            evaluate = val_stacks or distributed.active()  # a collective: all take part
            val_dice = evaluate_stacks(net, val_stacks, names, device) if evaluate else {}
            entry = {
                "epoch": epoch,
                "loss": float(distributed.all_reduce(np.mean(losses), "mean")),
                "val_dice": val_dice,
                "seconds": elapsed,
                "slices_per_second": seen / max(elapsed, 1e-9),
                "complete": state is not TrainState.STOPPED,
            }
            record["epochs"].append(entry)
            record["epochs_done"] = epoch
            emit(
                TrainEvent(
                    "epoch",
                    epoch,
                    step,
                    total,
                    loss=entry["loss"],
                    val_dice=val_dice,
                    slices_per_second=entry["slices_per_second"],
                    state=state,
                )
            )
            if state is TrainState.STOPPED:
                break

    except RuntimeError as exc:
        if distributed.active() and distributed.is_peer_failure(exc):
            raise distributed.failed_peer(exc) from exc
        raise

    record["seconds"] = float(record.get("seconds", 0.0)) + time.perf_counter() - run_start
    record["state"] = state.value
    model = net.cpu().eval()
    message = "stopped by the user" if state is TrainState.STOPPED else "done"
    emit(
        TrainEvent(
            "end", int(record.get("epochs_done", 0)), step, total, state=state, message=message
        )
    )
    return TrainResult(model, state, record, optimizer.state_dict())
