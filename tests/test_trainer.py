"""fit(): learning, progress events, the stop flag, seeds, ordered batches, deep supervision."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from napari_numsnet import pipeline
from napari_numsnet.config import TrainConfig
from napari_numsnet.data.dataset import TrainingStack
from napari_numsnet.engine.events import TrainState
from napari_numsnet.engine.trainer import fit
from napari_numsnet.engine.validation import evaluate_stacks, label_names
from napari_numsnet.models import create_model


def make_model(config, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(config)


def collect(events: list):
    return lambda event: events.append(event)


def learnable(**changes) -> TrainConfig:
    base = TrainConfig(
        epochs=10,
        batch_size=2,
        learning_rate=1e-2,
        augment=False,
        amp=False,
        device="cpu",
    )
    return base.replace(**changes)


@pytest.mark.parametrize("name", ["unet", "numsnet"])
def test_loss_decreases_and_squares_are_learned(name, tiny_config, square_stack):
    stack = square_stack(6)
    model = make_model(tiny_config(name, num_classes=2, dropout=0.0))
    events: list = []
    result = fit(model, [stack], learnable(), callback=collect(events))
    losses = [e.loss for e in events if e.kind == "step"]
    # unet: 6 slices in batches of 2 per epoch; numsnet: one run per annotated slice.
    assert len(losses) == (60 if name == "numsnet" else 30)
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:3])
    dice = evaluate_stacks(result.model, [stack], ["background", "square"], torch.device("cpu"))
    assert dice["square"] > 0.8
    assert result.state is TrainState.DONE
    assert not result.model.training  # handed back in eval mode


def test_events_start_steps_epochs_end(tiny_config, square_stack):
    train, val = square_stack(5, seed=0), square_stack(2, seed=1, name="val")
    events: list = []
    fit(
        make_model(tiny_config("numsnet")),
        [train],
        learnable(epochs=2),
        val_stacks=[val],
        class_names=["background", "square"],
        callback=collect(events),
    )
    kinds = [e.kind for e in events]
    # NUMSnet trains on one run of consecutive slices per annotated slice: 5 steps an epoch.
    assert kinds == ["start"] + (["step"] * 5 + ["epoch"]) * 2 + ["end"]
    assert events[0].total_steps == 10
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == list(range(1, 11))
    assert [e.epoch for e in steps] == [1] * 5 + [2] * 5
    assert all(e.loss is not None and np.isfinite(e.loss) for e in steps)
    epochs = [e for e in events if e.kind == "epoch"]
    assert [e.epoch for e in epochs] == [1, 2]
    for e in epochs:
        assert set(e.val_dice) <= {"background", "square"} and e.val_dice
        assert all(0.0 <= v <= 1.0 for v in e.val_dice.values())
        assert e.loss == pytest.approx(np.mean([s.loss for s in steps if s.epoch == e.epoch]))
    assert events[-1].state is TrainState.DONE


def test_epoch_events_have_no_dice_without_validation(tiny_config, square_stack):
    events: list = []
    result = fit(
        make_model(tiny_config("unet")),
        [square_stack(4)],
        learnable(epochs=1),
        callback=collect(events),
    )
    assert [e.val_dice for e in events if e.kind == "epoch"] == [{}]
    assert result.record["epochs"][0]["val_dice"] == {}
    assert result.record["epochs_done"] == 1


@pytest.mark.parametrize("k", [0, 2, 6])
def test_stop_flag_ends_training_after_k_steps(k, tiny_config, square_stack):
    stop = threading.Event()
    events: list = []

    def callback(event):
        events.append(event)
        if event.kind == "step" and event.step == k:
            stop.set()

    if k == 0:
        stop.set()
    model = make_model(tiny_config("numsnet"))
    before = copy.deepcopy(model.state_dict())
    # One run per annotated slice: 6 steps per epoch, 18 planned.
    result = fit(model, [square_stack(6)], learnable(epochs=3), callback=callback, stop_event=stop)
    assert sum(e.kind == "step" for e in events) == k
    assert events[0].kind == "start" and events[-1].kind == "end"
    assert events[-1].state is TrainState.STOPPED
    assert result.state is TrainState.STOPPED
    assert result.record["state"] == "stopped"
    after = result.model.state_dict()
    unchanged = all(torch.equal(before[key], after[key]) for key in before)
    assert unchanged == (k == 0)
    if k == 2:  # stopped inside epoch 1: the partial epoch is recorded as incomplete
        assert result.record["epochs_done"] == 1
        assert result.record["epochs"][-1]["complete"] is False
    if k == 6:  # stopped right after epoch 1: it is complete, epoch 2 never ran
        assert result.record["epochs_done"] == 1
        assert [e["complete"] for e in result.record["epochs"]] == [True]


def _trained_weights(config, stacks, training):
    model = make_model(config, seed=0)  # identical initial weights every time
    return fit(model, stacks, training).model.state_dict()


def test_same_seed_same_weights_other_seed_other_weights(tiny_config, square_stack):
    # Shuffled batches, augmentation and dropout all draw from the seed.
    config = tiny_config("unet", dropout=0.5)
    stacks = [square_stack(5)]
    training = learnable(epochs=2, augment=True, seed=3)
    a = _trained_weights(config, stacks, training)
    b = _trained_weights(config, stacks, training)
    c = _trained_weights(config, stacks, training.replace(seed=4))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert any(not torch.equal(a[key], c[key]) for key in a)


def test_pipeline_seed_also_fixes_initial_weights(tiny_config, synthetic_volume, pre32):
    image, labels = synthetic_volume
    stack = pipeline.AnnotatedStack(image, labels, annotated=[2, 4, 6])
    training = learnable(epochs=1)
    model = tiny_config("numsnet", num_classes=3)
    torch.manual_seed(123)  # the global generator's state must not matter
    a = pipeline.train(stack, model, training, pre32).state_dict
    torch.manual_seed(456)
    b = pipeline.train(stack, model, training, pre32).state_dict
    c = pipeline.train(stack, model, training.replace(seed=1), pre32).state_dict
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert any(not torch.equal(a[key], c[key]) for key in a)


@pytest.mark.parametrize(
    ("name", "ordered"),
    [
        ("numsnet", True),
        ("nums_all", True),
        ("unet", False),
        ("unetpp", False),
        ("drsegunet", False),
    ],
)
def test_sequential_models_train_on_ordered_batches(name, ordered, tiny_config, monkeypatch):
    # Slice i is the constant image i / 10, so the forward inputs tell the slice order.
    n = 7
    images = np.repeat(np.arange(n, dtype=np.float32)[:, None, None] / 10, 32, 1).repeat(32, 2)
    labels = np.zeros((n, 32, 32), dtype=np.int64)
    labels[:, :8] = 1
    stack = TrainingStack(images, labels, np.arange(n))
    model = make_model(tiny_config(name))
    batches, carries = [], []
    forward = model.forward

    def recording_forward(x, carry=None):
        batches.append(np.rint(x[:, 0, 0, 0].detach().numpy() * 10).astype(int).tolist())
        carries.append(carry is not None)
        return forward(x, carry)

    monkeypatch.setattr(model, "forward", recording_forward)
    fit(model, [stack], learnable(epochs=2, batch_size=3))
    assert not any(carries)  # a run is one batch: its slices are fused within the batch
    if ordered:
        # One run of 3 consecutive slices per annotated slice and epoch, in stack order.
        assert len(batches) == 2 * n
        assert all(b == list(range(b[0], b[0] + 3)) for b in batches)
        for epoch in (batches[:n], batches[n:]):
            assert set().union(*map(set, epoch)) == set(range(n))
    else:
        order = [i for b in batches for i in b]
        assert sorted(order) == sorted(list(range(n)) * 2)  # every slice once per epoch
        assert order != list(range(n)) * 2  # shuffled (fixed seed, 1 in 5040**2 to fail)


def test_deep_supervision_model_trains_every_head(tiny_config, square_stack):
    config = tiny_config("unetpp", deep_supervision=True, dropout=0.0)
    model = make_model(config)
    assert len(model.side_heads) == 3
    before = copy.deepcopy(model.state_dict())
    events: list = []
    result = fit(model, [square_stack(6)], learnable(), callback=collect(events))
    losses = [e.loss for e in events if e.kind == "step"]
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:3])
    after = result.model.state_dict()
    for key in [k for k in before if k.startswith(("side_heads.", "head."))]:
        assert not torch.equal(before[key], after[key]), key


def test_label_names_fill_in_defaults():
    assert label_names(["bg", "liver"], 3, exclusive=True) == ["bg", "liver", "class 2"]
    # Independent planes: 2 channels are label values 1 and 2, plus the background.
    assert label_names(None, 2, exclusive=False) == ["background", "class 1", "class 2"]
