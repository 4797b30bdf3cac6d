"""Every registered model through every feature that applies to all of them.

In the manner of segmentation_models_pytorch's shared model tests: a model gets all of
this by being registered. Tiny widths, 32-pixel slices, one optimiser step per training.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine.checkpoint import load_checkpoint, save_checkpoint, transfer_model
from napari_numsnet.engine.device import place_model
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import MODELS, create_model
from napari_numsnet.models.base import ModelContract, ModelKind, check_input, padded_size
from napari_numsnet.pseudolabel import KMeansConfig
from napari_numsnet.workflows import cascade, selflearn
from napari_numsnet.workflows.selflearn import SelfLearningConfig, self_learning

NAMES = sorted(MODELS)
TINY = (4, 4, 8, 8, 8)
Z, SIDE = 8, 32
PRE = PreprocessConfig(size=SIDE)
ONE_STEP = TrainConfig(
    epochs=1, steps=1, batch_size=2, augment=False, amp=False, device="cpu", learning_rate=1e-3
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(name: str, num_classes: int = 3) -> ModelConfig:
    return ModelConfig(name, num_classes=num_classes, widths=TINY)


def toy_stack(num_classes: int = 3) -> pipeline.AnnotatedStack:
    """``(8, 32, 32)`` with a square of every foreground class; slices 2..5 annotated."""
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (Z, SIDE, SIDE)).astype(np.float32)
    labels = np.zeros((Z, SIDE, SIDE), np.uint8)
    for c in range(1, num_classes):
        labels[:, 4 * c : 4 * c + 6, 4:14] = c
    image += labels
    return pipeline.AnnotatedStack(image, labels, [2, 3, 4, 5], name="toy")


@pytest.fixture(scope="module", params=NAMES)
def trained(request):
    """``(name, checkpoint)``: one step of training on the toy stack."""
    name = request.param
    return name, pipeline.train(toy_stack(), tiny(name), ONE_STEP, PRE, ClassTable.default(3))


@pytest.mark.parametrize("name", NAMES)
def test_declares_the_contract(name):
    model = create_model(tiny(name))
    assert isinstance(model, ModelContract)
    assert isinstance(model.kind, ModelKind)
    assert model.required_multiple >= 1 and model.required_depth >= 1
    assert model.head_modules(), "a model must declare its class-count-dependent heads"
    names = {n for n, _ in model.named_modules()}
    assert set(model.head_modules()) <= names
    for head in (None, *model.inference_heads):
        model.set_inference_head(head)
    with pytest.raises(ValueError):
        model.set_inference_head(99)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_on_the_cpu_gives_the_same_outputs_and_gradients(name):
    """What training and prediction do on a CPU (``place_model``): the same logits and
    gradients as the default layout; slice and sequence models in channels-last memory.

    Compared in float64, where only the summation order differs: in float32 a tiny
    RAIU-Net's gradients moved by 0.2-0.4% (relative norm) on one CPU, by rounding alone.
    """
    torch.manual_seed(0)
    # Dropout draws its mask in memory order: without it the two layouts must agree.
    plain = create_model(dataclasses.replace(tiny(name), dropout=0.0)).train().double()
    placed = place_model(copy.deepcopy(plain), torch.device("cpu")).train()
    weights = [p for p in placed.parameters() if p.dim() == 4]
    if placed.kind is ModelKind.VOLUME:
        assert all(p.is_contiguous() for p in placed.parameters())
    else:
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
        assert any(not p.is_contiguous() for p in weights)  # the layout did change
    shape = (4, 32, 32) if plain.kind is ModelKind.VOLUME else (32, 32)
    x = torch.randn(2, 1, *shape, dtype=torch.float64)
    outputs = []
    for model in (plain, placed):
        out = model(x).logits
        out.square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        outputs.append((out.detach(), grads))
    (a, grads_a), (b, grads_b) = outputs
    torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    assert len(grads_a) == len(grads_b)
    flat_a = torch.cat([g.flatten() for g in grads_a])
    flat_b = torch.cat([g.flatten() for g in grads_b])
    assert float((flat_b - flat_a).norm()) <= 1e-9 * float(flat_a.norm())


@pytest.mark.parametrize("name", NAMES)
def test_forward_on_odd_sizes_after_the_pad_rule_and_backward(name):
    model = create_model(tiny(name))
    shape = (3, 33, 20) if model.kind is ModelKind.VOLUME else (33, 20)
    x = torch.randn(2, 1, *shape)
    if padded_size(model, shape) != shape:
        with pytest.raises(ValueError, match="pad it to"):
            check_input(model, x)
    target = padded_size(model, shape)
    pad: list[int] = []
    for have, want in zip(reversed(shape), reversed(target), strict=True):
        pad += [0, want - have]
    x = F.pad(x, pad)
    model.train()
    out = model(x)
    assert out.logits.shape == (2, 3, *target)
    heads = out.heads if out.heads is not None else (out.logits,)
    sum(h.float().mean() for h in heads).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_checkpoint_save_load_and_continue_training(trained, tmp_path):
    name, ckpt = trained
    path = save_checkpoint(ckpt, tmp_path / f"{name}.numsnet.pt")
    loaded = load_checkpoint(path)
    assert loaded.model_config == ckpt.model_config
    for key, value in ckpt.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value), key
    again = pipeline.train(
        toy_stack(), loaded.model_config, ONE_STEP, PRE, ClassTable.default(3), resume=loaded
    )
    assert again.model_config == ckpt.model_config
    assert any(not torch.equal(again.state_dict[k], v) for k, v in ckpt.state_dict.items())


def test_transfer_three_to_five_classes(trained):
    name, ckpt = trained
    model = transfer_model(ckpt, 5)
    new = model.state_dict()
    for key in new:
        if not model.is_head_parameter(key):
            assert torch.equal(new[key], ckpt.state_dict[key]), key
    result = pipeline.train(
        toy_stack(5), tiny(name, 5), ONE_STEP, PRE, ClassTable.default(5), transfer_from=ckpt
    )
    assert result.model_config.num_classes == 5


def test_slice_range_prediction_is_full_size(trained):
    _, ckpt = trained
    image = toy_stack().image
    part = pipeline.predict(ckpt, image, slice_range=(2, 5), probabilities=True)
    assert part.labels.shape == image.shape
    assert part.probabilities is not None and part.probabilities.shape == (3, *image.shape)
    assert not part.labels[:2].any() and not part.labels[5:].any()


def predicting_class_one(ckpt):
    """``ckpt`` with its head biases pushing class 1 everywhere (a non-empty region)."""
    model = create_model(ckpt.model_config)
    state = dict(ckpt.state_dict)
    for key, value in state.items():
        if model.is_head_parameter(key) and key.endswith("bias") and value.shape == (3,):
            state[key] = torch.tensor([0.0, 20.0, 0.0])
    return dataclasses.replace(ckpt, state_dict=state)


def test_either_stage_of_a_cascade(trained):
    _, ckpt = trained
    other = pipeline.train(toy_stack(), tiny("unet"), ONE_STEP, PRE, ClassTable.default(3))
    ckpt, other = predicting_class_one(ckpt), predicting_class_one(other)
    image = toy_stack().image
    for region, inner in ((ckpt, other), (other, ckpt)):
        result = cascade.Cascade(region, inner, (1, 2)).predict(image, probabilities=True)
        assert result.labels.shape == image.shape
        assert result.probabilities is not None
        ranged = pipeline.predict(
            cascade.Cascade(region, inner, (1, 2)), image, slice_range=(1, 3)
        )
        assert ranged.labels.shape == image.shape


@pytest.mark.parametrize("name", NAMES)
def test_a_self_learning_level_two_step(name, monkeypatch):
    """Level 2 fine-tunes level 1 with frozen layers (crashed for MSDS-UNet before).

    One step of level 1 learns nothing, so the collapse guard (tested elsewhere) is off.
    """
    monkeypatch.setattr(selflearn, "collapse_reason", lambda *args: "")
    image = np.full((Z, SIDE, SIDE), -1000.0, np.float32)
    rr, cc = np.mgrid[:SIDE, :SIDE]
    image[:, (rr - 16) ** 2 + (cc - 16) ** 2 < 150] = 40.0
    image[1:-1, (rr - 16) ** 2 + (cc - 11) ** 2 < 20] = -850.0
    image[1:-1, (rr - 16) ** 2 + (cc - 21) ** 2 < 20] = -850.0
    image[1:-1, (rr - 14) ** 2 + (cc - 11) ** 2 < 4] = -400.0
    image += np.random.default_rng(0).normal(0.0, 10.0, image.shape).astype(np.float32)
    result = self_learning(
        image,
        tiny(name),
        ONE_STEP,
        KMeansConfig(k=2),
        SelfLearningConfig(levels=2, fine_tune_epochs=1),
        preprocess=PreprocessConfig(size=SIDE, window=(-1000.0, 400.0)),
    )
    assert [level.level for level in result.levels] == [0, 1, 2]
    assert result.levels[2].frozen
