"""The exponential moving average of the weights: its arithmetic, what ``fit`` validates,
keeps and returns with it, and that it applies to every model of the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine import trainer as trainer_module
from napari_numsnet.engine.averaging import WeightAverage
from napari_numsnet.engine.trainer import fit
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import MODELS, create_model


def recipe(**changes) -> TrainConfig:
    base = TrainConfig(
        steps=6, batch_size=2, learning_rate=1e-2, augment=False, amp=False, device="cpu"
    )
    return base.replace(**changes)


def test_the_average_follows_its_formula_with_the_warm_up():
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    average = WeightAverage(net, decay=0.9)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], start=1):
        with torch.no_grad():
            net.weight.fill_(value)
        average.update(net)
        decay = min(0.9, (1 + n) / (10 + n))  # 2/11, 3/12, ... then 0.9 from n = 80
        expected = decay * expected + (1 - decay) * value
        assert average.state["weight"].item() == pytest.approx(expected)
    assert average.updates == 10
    assert net.weight.item() == 10.0  # the network keeps its own weights


def test_integer_buffers_are_copied_and_the_swap_is_undone():
    net = nn.BatchNorm1d(2)
    average = WeightAverage(net, decay=0.5)
    net.train()
    net(torch.randn(4, 2))
    average.update(net)
    assert average.state["num_batches_tracked"].item() == 1
    live = {k: v.clone() for k, v in net.state_dict().items()}
    with average.swapped_in(net):
        assert torch.equal(net.running_mean, average.state["running_mean"])
    assert all(torch.equal(net.state_dict()[k], live[k]) for k in live)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_decay_outside_zero_one_is_refused(tiny_config, square_stack, decay):
    with pytest.raises(NumsnetError, match="averaging"):
        fit(create_model(tiny_config("unet")), [square_stack(4)], recipe(weight_average=decay))


def trained_weights_per_step(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Record the network's weights after every optimiser step of ``fit``."""
    after: list[dict[str, torch.Tensor]] = []
    real_step = trainer_module.train_step

    def recording(model, batch, setup, weight):
        loss = real_step(model, batch, setup, weight)
        after.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return loss

    monkeypatch.setattr(trainer_module, "train_step", recording)
    return after


def test_fit_returns_the_average_of_the_trained_weights(tiny_config, square_stack, monkeypatch):
    after = trained_weights_per_step(monkeypatch)
    torch.manual_seed(0)
    result = fit(create_model(tiny_config("unet")), [square_stack(4)], recipe(weight_average=0.8))
    assert len(after) == 6
    final = result.model.state_dict()
    key = next(k for k, v in final.items() if v.dtype.is_floating_point and v.numel() > 1)
    torch.manual_seed(0)
    expected = create_model(tiny_config("unet")).state_dict()[key].clone()
    for n, state in enumerate(after, start=1):
        decay = min(0.8, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * state[key]
    torch.testing.assert_close(final[key], expected)
    assert not torch.equal(final[key], after[-1][key])


def test_validation_scores_the_average_and_keeps_it_as_the_best(
    tiny_config, square_stack, monkeypatch
):
    after = trained_weights_per_step(monkeypatch)
    validated: list[dict[str, torch.Tensor]] = []
    scores = iter([0.2, 0.9, 0.1])

    def evaluate(model, stacks, names, device, direction="forward", predictions=None):
        validated.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"background": 1.0, "square": next(scores)}

    monkeypatch.setattr(trainer_module, "evaluate_stacks", evaluate)
    stack = square_stack(4)
    last: list[dict[str, torch.Tensor]] = []
    best: list[dict[str, torch.Tensor]] = []

    def on_checkpoint(result, which):
        state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
        (last if which == "last" else best).append(state)

    config = recipe(steps=6, val_every=2, weight_average=0.8, checkpoint_seconds=0)
    result = fit(
        create_model(tiny_config("unet")),
        [stack],
        config,
        val_stacks=[stack],
        on_checkpoint=on_checkpoint,
    )
    final = result.model.state_dict()
    assert all(torch.equal(final[k], validated[1][k]) for k in final)  # the best, averaged
    floating = [k for k, v in final.items() if v.dtype.is_floating_point]
    # what was validated is not what was trained at that step; the "last" checkpoint
    # holds the trained weights, to continue from
    assert not all(torch.equal(validated[1][k], after[3][k]) for k in floating)
    assert all(torch.equal(last[1][k], after[3][k]) for k in floating)
    # the best (averaged) weights reach the "best" checkpoint as without averaging
    assert len(best) == 2
    assert all(torch.equal(best[-1][k], validated[1][k]) for k in final)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registry_model_trains_with_the_average(name):
    """One validated run per model (tiny widths, 32 px): the averaged weights are what
    comes back, finite, and not the plain run's."""
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (8, 32, 32)).astype(np.float32)
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[:, 8:20, 6:18] = 1
    image += labels
    stack = pipeline.AnnotatedStack(image, labels, [1, 2, 3, 4, 5, 6], [3], name="toy")
    model = ModelConfig(name, num_classes=2, widths=(4, 4, 8, 8, 8))
    classes = ClassTable.default(2)
    pre = PreprocessConfig(size=32)

    def trained(decay: float) -> dict[str, torch.Tensor]:
        config = TrainConfig(
            steps=3, batch_size=2, augment=True, amp=False, device="cpu", weight_average=decay
        )
        return pipeline.train(stack, model, config, pre, classes).state_dict

    plain, averaged = trained(0.0), trained(0.9)
    assert plain.keys() == averaged.keys()
    assert all(torch.isfinite(v).all() for v in averaged.values() if v.dtype.is_floating_point)
    assert not all(torch.equal(plain[k], averaged[k]) for k in plain)
