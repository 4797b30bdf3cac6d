"""UNet#: eight supervised heads, pruning, and the classification-guided module."""

from __future__ import annotations

import pytest
import torch

from napari_numsnet.config import ModelConfig, TrainConfig
from napari_numsnet.data.dataset import TrainingStack
from napari_numsnet.engine.losses import bdl_loss
from napari_numsnet.engine.output_loss import presence_targets, supervised_loss
from napari_numsnet.engine.trainer import fit
from napari_numsnet.models import create_model

TINY = (4, 8, 8, 8, 8)


def tiny(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(ModelConfig("UNet#", num_classes=3, widths=TINY, **kwargs))


def test_eight_heads_at_their_scales():
    out = tiny().train()(torch.randn(2, 1, 64, 64))
    sides = [h.shape[-1] for h in out.heads]
    assert sides == [64, 64, 64, 64, 32, 16, 8, 4]
    assert out.presence.shape == (2, 3)


def test_accurate_mode_averages_the_full_resolution_heads():
    model = tiny(exclusive=True)
    model.guide = None  # without suppression the average is plain
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        model.train(False)
        nodes = model._compute(x, 4)
        full = [head(nodes[(0, j)]) for j, head in enumerate(model.full_heads, start=1)]
        torch.testing.assert_close(model(x).logits, torch.stack(full).mean(0))


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_fast_mode_prunes_to_one_head_and_computes_fewer_nodes(level):
    model = tiny().eval()
    model.guide = None
    called = []
    for name, node in model.nodes.items():
        node.register_forward_hook(lambda *_, name=name: called.append(name))
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        full_nodes = model._compute(x, 4)
        expected = model.full_heads[level - 1](full_nodes[(0, level)])
        called.clear()
        model.set_inference_head(level)
        torch.testing.assert_close(model(x).logits, expected)
    decoder = [n for n in called if not n.endswith("_0")]
    assert len(decoder) == level * (level + 1) // 2  # nodes with i + j <= level, j >= 1


def test_classification_guide_suppresses_absent_classes():
    model = tiny(exclusive=True).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        # Make the guide say "only the background is present" with certainty.
        last = model.guide.classify[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([5.0, -5.0, -5.0]))
        labels = model(x).logits.argmax(1)
    assert labels.eq(0).all()


def test_presence_targets_and_loss():
    labels = torch.tensor([[[0, 2], [2, 0]], [[0, 0], [0, 0]]])
    assert presence_targets(labels, 3, exclusive=True).tolist() == [[1, 0, 1], [1, 0, 0]]
    assert presence_targets(labels, 2, exclusive=False).tolist() == [[0, 1], [0, 0]]
    model = tiny().train()
    x = torch.randn(2, 1, 32, 32)
    target = torch.randint(0, 3, (2, 32, 32))
    out = model(x)
    total = supervised_loss(bdl_loss, out, target, True)
    without = supervised_loss(bdl_loss, out._replace(presence=None), target, True)
    assert float(total) > float(without)
    total.backward()
    assert model.guide.classify[-1].weight.grad is not None


def test_trains_with_fit_including_single_slice_batches():
    stack = TrainingStack(
        torch.rand(3, 32, 32).numpy(),
        torch.randint(0, 3, (3, 32, 32)).numpy(),
        torch.arange(3).numpy(),
        "s",
    )
    result = fit(tiny(), [stack], TrainConfig(epochs=2, batch_size=2, device="cpu", amp=False))
    assert result.record["epochs_done"] == 2


def test_fast_mode_without_the_guide_skips_the_deep_encoder():
    """Fast mode at level k computes only nodes with i + j <= k, the encoder included."""
    from napari_numsnet.models.unetsharp import UNetSharp

    model = UNetSharp(1, 2, (2, 2, 2, 2, 2), classification_guided=False).eval()
    model.set_inference_head(1)
    run = []
    for name, node in model.nodes.items():
        node.register_forward_hook(lambda m, i, o, name=name: run.append(name))
    with torch.no_grad():
        model(torch.randn(1, 1, 32, 32))
    assert sorted(run) == ["x_0_0", "x_0_1", "x_1_0"]
