"""The networks: paper parameter counts, shapes, gradients, deep supervision and the
slice-to-slice propagation of the NUMSnet family."""

from __future__ import annotations

import pytest
import torch

from napari_numsnet.config import ModelConfig
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import MODELS, create_model, keras_parameter_count
from napari_numsnet.models.base import ModelKind

# NUMSnet paper, Table I (Keras "Total params"), and the DRSegUNet thesis tables.
PAPER_COUNTS = {
    "unet": 7_767_523,
    "wunet": 9_290_998,
    "unetpp": 9_045_507,
    "numsnet": 11_713_943,
    "nums_all": 14_526_368,
    "drsegunet": 6_877_011,
}
# Non-trainable parameters of Table I: the BatchNorm running mean and variance.
PAPER_NON_TRAINABLE = {
    "unet": 3_968,
    "wunet": 4_340,
    "unetpp": 1_920,
    "numsnet": 2_100,
    "nums_all": 2_100,
}
TINY = {name: (4, 8, 8, 8, 8) for name in MODELS}


def tiny(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(ModelConfig(name, num_classes=3, widths=TINY[name], **kwargs))


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_parameter_count_matches_paper(name):
    model = create_model(ModelConfig(name, in_channels=1, num_classes=3))
    assert keras_parameter_count(model) == PAPER_COUNTS[name]
    if name in PAPER_NON_TRAINABLE:
        trainable = sum(p.numel() for p in model.parameters())
        assert PAPER_COUNTS[name] - trainable == PAPER_NON_TRAINABLE[name]


def test_registry_covers_every_paper_model():
    assert set(PAPER_COUNTS) <= set(MODELS)


#: Models of 2D slices (the 3D MSDS-UNet has its own tests).
PLANAR = [name for name in sorted(MODELS) if tiny(name).kind is not ModelKind.VOLUME]


@pytest.mark.parametrize("name", PLANAR)
@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (3, 1, 48, 16), (1, 1, 64, 80)])
def test_forward_shape_and_backward(name, shape):
    model = tiny(name).train()
    x = torch.randn(shape)
    out = model(x)
    assert out.logits.shape == (shape[0], 3, *shape[2:])
    loss = out.logits.square().mean() + sum(h.square().mean() for h in out.heads or ())
    if out.presence is not None:
        loss = loss + out.presence.square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", PLANAR)
def test_size_not_multiple_of_16_is_refused_with_advice(name):
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny(name)(torch.randn(1, 1, 30, 32))


def test_unknown_model_lists_valid_names():
    with pytest.raises(NumsnetError, match="numsnet"):
        create_model(ModelConfig("segformer"))


def test_wrong_widths_say_what_to_give():
    with pytest.raises(NumsnetError, match="5 positive widths"):
        create_model(ModelConfig("unet", widths=(8, 16)))


def test_name_aliases():
    assert create_model(ModelConfig("UNet++", widths=TINY["unetpp"])).config.name == "unetpp"
    assert create_model(ModelConfig("NUMS-all", widths=TINY["nums_all"])).config.name == "nums_all"


@pytest.mark.parametrize("name", ["numsnet", "nums_all"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_chunked_stack_equals_one_pass(name, chunk):
    model = tiny(name).double().eval()
    assert model.kind is ModelKind.SEQUENCE
    stack = torch.randn(7, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        whole = model(stack).logits
        parts, carry = [], None
        for start in range(0, len(stack), chunk):
            out = model(stack[start : start + chunk], carry)
            parts.append(out.logits)
            carry = out.carry
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["numsnet", "nums_all"])
def test_propagation_is_real(name):
    """Reversing the order of the slices changes each slice's prediction."""
    model = tiny(name).eval()
    stack = torch.randn(5, 1, 32, 32)
    with torch.no_grad():
        forward = model(stack).logits
        backward = model(stack.flip(0)).logits.flip(0)
        alone = torch.cat([model(s[None]).logits for s in stack])
    # The first slice of a sequence sees only itself, in both cases.
    torch.testing.assert_close(forward[0], alone[0])
    assert (forward - backward).abs().amax(dim=(1, 2, 3))[1:].min() > 1e-6
    assert (forward - alone)[1:].abs().max() > 1e-6


def test_non_sequential_models_ignore_order():
    model = tiny("unetpp").eval()
    stack = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        out = model(stack)
        flipped = model(stack.flip(0)).logits.flip(0)
    assert out.carry is None
    torch.testing.assert_close(out.logits, flipped)


def test_deep_supervision_heads_and_modes():
    model = tiny("unetpp", deep_supervision=True)
    x = torch.randn(2, 1, 32, 32)
    model.train()
    heads = model(x).heads
    assert heads is not None and len(heads) == 4
    model.eval()
    with torch.no_grad():
        heads = model(x).heads
        accurate = model(x).logits
        torch.testing.assert_close(accurate, torch.stack(heads).mean(0))
        model.set_inference_head(1)
        torch.testing.assert_close(model(x).logits, heads[0])


def test_deep_supervision_adds_three_heads_only():
    plain = keras_parameter_count(create_model(ModelConfig("unetpp")))
    deep = keras_parameter_count(create_model(ModelConfig("unetpp", deep_supervision=True)))
    assert deep - plain == 3 * (32 * 3 + 3)
