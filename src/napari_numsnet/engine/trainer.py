"""``fit()``: few-shot training in plain PyTorch.

A short loop over a batch source chosen by the model's kind (shuffled slices, runs of
consecutive slices for the NUMSnet family, 3D sub-volumes), a step budget with warm-up
and a decaying learning rate, augmentation on tensors (so it runs on the GPU too), the
best weights by validation Dice kept, an optional plateau stop, mixed precision on CUDA,
a seed for reproducibility, a progress callback, periodic checkpoints and a stop flag
honoured within one step. No Qt, no napari: the widgets run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_numsnet.config import TrainConfig, step_budget
from napari_numsnet.data.dataset import StackSample, TrainingStack
from napari_numsnet.engine import distributed, threads
from napari_numsnet.engine.averaging import WeightAverage
from napari_numsnet.engine.batches import (
    BatchSource,
    annotated_count,
    make_source,
    unannotated_count,
)
from napari_numsnet.engine.class_weights import run_loss
from napari_numsnet.engine.device import (
    describe_device,
    place_model,
    preserved_random_state,
    seed_everything,
    select_device,
    training_dtype,
)
from napari_numsnet.engine.events import ProgressCallback, TrainEvent, TrainState
from napari_numsnet.engine.recipe import check_patch, check_semi_supervised, checked_recipe
from napari_numsnet.engine.schedule import (
    learning_rate_factor,
    make_optimizer,
    set_learning_rate,
)
from napari_numsnet.engine.step import StepSetup, train_step
from napari_numsnet.engine.validation import (
    evaluate_stacks,
    foreground_score,
    label_names,
    stacks_showing,
    uncovered_classes,
)
from napari_numsnet.engine.volumetric import window_depth
from napari_numsnet.models.base import ModelKind


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


TrainingData = StackSample | TrainingStack

#: ``on_checkpoint(result, which)``: ``which`` is ``"last"`` or ``"best"``. ``result.model``
#: is the live model: save it at once and do not change it.
CheckpointCallback = Callable[[TrainResult, str], None]


@dataclass
class _Run:
    """What one call of :func:`fit` tracks besides the weights."""

    total: int
    steps_per_epoch: int
    eval_every: int
    best_score: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    best_step: int = 0
    stale: int = 0
    best_unsaved: bool = False
    last_saved: float = field(default_factory=time.perf_counter)


def evaluation_interval(config: TrainConfig, steps_per_epoch: int, total: int) -> int:
    """Steps between two validations: ``val_every``, else an epoch but at most 25 in a run."""
    if config.val_every > 0:
        return config.val_every
    return max(steps_per_epoch, math.ceil(total / 25))


def _source_for(
    net: nn.Module, stacks: Sequence[TrainingData], config: TrainConfig
) -> BatchSource:
    kind = net.kind
    depth = 16
    if kind is ModelKind.VOLUME:
        depth = window_depth(net, max(len(s.images) for s in stacks))
    check_semi_supervised(net, config)
    check_patch(net, config)
    unlabelled = config.batch_size if config.semi_supervised > 0 else 0
    batch = config.batch_size
    if kind is ModelKind.SEQUENCE and config.run_length > 0:
        batch = config.run_length
    return make_source(
        kind, stacks, batch, depth, unlabelled, net.config.context, config.runs_reversed
    )


def fit(
    model: nn.Module,
    train_stacks: Sequence[TrainingData],
    config: TrainConfig,
    val_stacks: Sequence[TrainingData] = (),
    class_names: Sequence[str] | None = None,
    callback: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
    optimizer_state: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
    on_checkpoint: CheckpointCallback | None = None,
) -> TrainResult:
    """Train ``model`` on the annotated slices of ``train_stacks``.

    Parameters
    ----------
    model
        A registry model; its ``kind`` chooses the batch source.
    train_stacks
        Whole preprocessed stacks with their annotated slices
        (:class:`~napari_numsnet.data.dataset.StackSample`), or the annotated slices
        alone (:class:`~napari_numsnet.data.dataset.TrainingStack`). Only annotated slices
        enter the loss; the NUMSnet family also sees their unannotated neighbours.
    config
        Step budget (``steps``, else ``epochs``), batch size (clamped to the data),
        optimiser, schedule, loss, augmentation, validation cadence, device.
    val_stacks
        Validation slices; their Dice per class is reported at every validation and, with
        ``keep_best``, the best weights are the ones returned. A class annotated on
        training slices that no validation slice shows is scored on its training slices
        for that choice (``record["scored_on_training_slices"]``, and ``"train_dice"`` in
        each validation round), so that the choice cannot forget it unnoticed.
    class_names
        One name per label value (background first for exclusive classes).
    callback
        Called with a :class:`TrainEvent` at the start, after every step and every
        validation (``"epoch"``), and at the end.
    stop_event
        When set, training stops before the next step (within one step).
    optimizer_state, record
        From a checkpoint, to continue training where it stopped.
    on_checkpoint
        Called with the current state and ``"last"`` or ``"best"`` at most every
        ``config.checkpoint_seconds`` seconds (rank 0 only under torchrun).

    Returns
    -------
    TrainResult
        The returned model holds the best validated weights when ``keep_best`` is on and
        there were validation slices, else the last ones.
    """
    annotated, unannotated = annotated_count(train_stacks), unannotated_count(train_stacks)
    if distributed.active():  # the whole annotation, not this process's share
        annotated = int(distributed.all_reduce(annotated, "sum"))
        unannotated = int(distributed.all_reduce(unannotated, "sum"))
    config, term_skipped = checked_recipe(config, annotated, unannotated)
    cfg = model.config
    names = label_names(class_names, cfg.num_classes, cfg.exclusive)
    device = select_device(config.device)
    seed_everything(config.seed)
    rank = torch.distributed.get_rank() if distributed.active() else 0
    generator = torch.Generator().manual_seed(config.seed + rank)
    net = place_model(model, device)
    # Under torchrun: DistributedDataParallel; ``net`` stays the plain model.
    model = distributed.wrap(net, device) if distributed.active() else net
    source = _source_for(net, train_stacks, config)
    optimizer = make_optimizer(model.parameters(), config)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    dtype = training_dtype(device, net.kind, config.amp, config.cpu_bf16)
    loss_fn, weights = run_loss(config, train_stacks, cfg.num_classes, cfg.exclusive)
    setup = StepSetup(
        loss_fn,
        optimizer,
        config,
        device,
        generator,
        cfg.exclusive,
        dtype,
        torch.amp.GradScaler("cuda") if dtype == torch.float16 else None,
    )

    record = copy.deepcopy(record or {})  # never touch the caller's (a checkpoint's) record
    record.setdefault("epochs", [])
    record.update(
        device=describe_device(device),
        precision=str(dtype).removeprefix("torch.") if dtype else "float32",
        model=cfg.name,
        train_slices=annotated_count(train_stacks),
        val_slices=annotated_count(val_stacks),
        batch_size=source.batch_size,
        class_names=names,
    )
    if weights is not None:
        record["class_weights"] = [round(float(w), 4) for w in weights]
    steps_per_epoch = source.steps_per_epoch()
    if distributed.active():  # every process must take the same number of steps
        steps_per_epoch = int(distributed.all_reduce(steps_per_epoch, "min"))
    total = step_budget(config, annotated_count(train_stacks), steps_per_epoch)
    if distributed.active():
        total = int(distributed.all_reduce(total, "min"))
    run = _Run(total, steps_per_epoch, evaluation_interval(config, steps_per_epoch, total))
    average = WeightAverage(net, config.weight_average) if config.weight_average > 0 else None
    record["budget"] = {"steps": total, "steps_per_epoch": steps_per_epoch}
    if term_skipped:
        record["semi_supervised_skipped"] = term_skipped
    elif config.semi_supervised > 0:  # a resumed run may have waited for it before
        record.pop("semi_supervised_skipped", None)
    uncovered = uncovered_classes(train_stacks, val_stacks or [], names, cfg.exclusive)
    coverage = stacks_showing(train_stacks, uncovered, names) if uncovered else []
    if uncovered:
        record["scored_on_training_slices"] = uncovered
    emit = callback or (lambda event: None)
    stop = stop_event or threading.Event()
    emit(TrainEvent("start", 0, 0, total, message=f"training on {record['device']}"))

    state, step = TrainState.DONE, 0
    epoch = int(record.get("epochs_done", 0))
    losses: list[float] = []
    seen, window_start, run_start = 0, time.perf_counter(), time.perf_counter()

    def validate(complete: bool) -> bool:
        """Validate, record the round, keep the best weights; ``True`` means stop early."""
        nonlocal epoch, losses, seen, window_start
        epoch += 1
        elapsed = time.perf_counter() - window_start
        evaluate = val_stacks or distributed.active()  # a collective: all take part
        with average.swapped_in(net) if average else contextlib.nullcontext():
            direction = config.prediction_direction  # validated as it will predict
            predictions: dict[int, np.ndarray] = {}  # a stack shared by both: predicted once
            val_dice = (
                evaluate_stacks(net, val_stacks, names, device, direction, predictions)
                if evaluate
                else {}
            )
            train_dice = (
                evaluate_stacks(net, coverage, names, device, direction, predictions)
                if uncovered
                else {}
            )
        train_dice = {k: v for k, v in train_dice.items() if k in uncovered}
        score = foreground_score(val_dice, names, cfg.exclusive, train_dice)
        entry = {
            "epoch": epoch,
            "step": int(record.get("steps_done", 0)) + step,
            "loss": float(distributed.all_reduce(np.mean(losses), "mean")),
            "val_dice": val_dice,
            **({"train_dice": train_dice} if uncovered else {}),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": elapsed,
            "slices_per_second": seen / max(elapsed, 1e-9),
            "complete": complete,
        }
        record["epochs"].append(entry)
        record["epochs_done"] = epoch
        if threads.revisit():  # the load changed: another CPU thread count from now on
            record["device"] = describe_device(device)
        improved = math.isfinite(score) and score > run.best_score
        if improved:
            run.best_score, run.best_step, run.stale = score, step, 0
            if config.keep_best:  # the weights validated: the average where there is one
                validated = average.state if average is not None else net.state_dict()
                run.best_state = {k: v.detach().cpu().clone() for k, v in validated.items()}
                run.best_unsaved = True
        elif math.isfinite(score):
            run.stale += 1
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
        losses, seen, window_start = [], 0, time.perf_counter()
        return config.patience > 0 and run.stale >= config.patience

    def save_checkpoint(force: bool = False) -> None:
        if on_checkpoint is None or rank != 0:
            return
        if not force and time.perf_counter() - run.last_saved < config.checkpoint_seconds:
            return
        now = copy.deepcopy(record)  # the steps so far, so that a resume counts on
        now["steps_done"] = int(record.get("steps_done", 0)) + step
        # A hook may draw random numbers (building a model does) or switch the network
        # to eval mode to score it: neither may change the rest of the run.
        training_mode = net.training
        with preserved_random_state(device):
            on_checkpoint(
                TrainResult(net, TrainState.TRAINING, now, optimizer.state_dict()), "last"
            )
            if run.best_unsaved and run.best_state is not None:
                best = copy.deepcopy(net).cpu()
                best.load_state_dict(run.best_state)
                on_checkpoint(TrainResult(best, TrainState.TRAINING, copy.deepcopy(now)), "best")
                run.best_unsaved = False
        net.train(training_mode)
        run.last_saved = time.perf_counter()

    try:
        finished = False
        while not finished:
            model.train()
            for index, batch in enumerate(source.epoch(generator)):
                if index == steps_per_epoch:  # shards of unequal size: stop together
                    break
                stopping = stop.is_set()
                if distributed.active():  # one process's stop stops them all
                    stopping = bool(distributed.all_reduce(float(stopping), "sum") > 0)
                if stopping:
                    state = TrainState.STOPPED
                    finished = True
                    break
                step_start = time.perf_counter()
                set_learning_rate(
                    optimizer, config.learning_rate * learning_rate_factor(step, total, config)
                )
                weight = config.semi_supervised if step >= total // 5 else 0.0
                losses.append(train_step(model, batch, setup, weight))
                if average is not None:
                    average.update(net)
                step += 1
                slices = batch.annotated_slices if batch.volumetric else len(batch.images)
                seen += slices
                emit(
                    TrainEvent(
                        "step",
                        epoch + 1,
                        step,
                        total,
                        loss=losses[-1],
                        slices_per_second=slices / max(time.perf_counter() - step_start, 1e-9),
                    )
                )
                if step % run.eval_every == 0 or step == total:
                    if validate(complete=True):
                        finished = True
                    model.train()
                    save_checkpoint()
                if step == total:
                    finished = True
                if finished:
                    break
        if state is TrainState.STOPPED and losses:
            validate(complete=False)
    except RuntimeError as exc:
        if distributed.active() and distributed.is_peer_failure(exc):
            raise distributed.failed_peer(exc) from exc
        raise

    record["steps_done"] = int(record.get("steps_done", 0)) + step
    record["seconds"] = float(record.get("seconds", 0.0)) + time.perf_counter() - run_start
    record["state"] = state.value
    if run.best_state is None and average is not None:
        net.load_state_dict(average.state)
    if run.best_state is not None:
        net.load_state_dict(run.best_state)
        record["best"] = {"step": run.best_step, "val_dice_mean": run.best_score}
    model = net.cpu().eval()
    message = "stopped by the user" if state is TrainState.STOPPED else "done"
    if run.stale and config.patience and run.stale >= config.patience:
        message = f"stopped early: no better validation Dice in {config.patience} validations"
    emit(TrainEvent("end", epoch, step, total, state=state, message=message))
    return TrainResult(model, state, record, optimizer.state_dict())
