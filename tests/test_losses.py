"""Losses: hand-computed values, masks, gradients, autocast."""

from __future__ import annotations

import math

import pytest
import torch

from napari_numsnet.engine.losses import (
    bce_loss,
    bdl_loss,
    ce_loss,
    dice_loss,
    get_loss,
    one_hot_planes,
)
from napari_numsnet.errors import NumsnetError

LN3 = math.log(3.0)  # sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4, sigmoid(0) = 1/2
ALL_LOSSES = [dice_loss, bce_loss, bdl_loss, ce_loss]


def exclusive_case() -> tuple[torch.Tensor, torch.Tensor]:
    """1x2x2x2 logits whose softmax is easy: channel 1 minus channel 0 is the log-odds."""
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = torch.tensor([[LN3, -LN3], [0.0, -LN3]])
    labels = torch.tensor([[[1, 0], [1, 1]]])
    # p1 = [[3/4, 1/4], [1/2, 1/4]], p0 = 1 - p1 = [[1/4, 3/4], [1/2, 3/4]]
    return logits, labels


def independent_case() -> tuple[torch.Tensor, torch.Tensor]:
    """1x2x2x2 logits of two sigmoid planes: plane 0 is label 1, plane 1 is label 2."""
    logits = torch.tensor([[[[LN3, -LN3], [0.0, -LN3]], [[0.0, LN3], [-LN3, LN3]]]])
    labels = torch.tensor([[[1, 2], [0, 2]]])
    # plane 0: p = [[3/4, 1/4], [1/2, 1/4]], G = [[1, 0], [0, 0]]
    # plane 1: p = [[1/2, 3/4], [1/4, 3/4]], G = [[0, 1], [0, 1]]
    return logits, labels


def test_one_hot_planes_exclusive_and_independent():
    labels = torch.tensor([[[0, 1], [2, 1]]])
    ex = one_hot_planes(labels, 3, exclusive=True)
    assert ex.shape == (1, 3, 2, 2) and ex.dtype == torch.float32
    assert ex[0, 0].tolist() == [[1, 0], [0, 0]]
    assert ex[0, 1].tolist() == [[0, 1], [0, 1]]
    assert ex[0, 2].tolist() == [[0, 0], [1, 0]]
    ind = one_hot_planes(labels, 2, exclusive=False)  # planes of label values 1 and 2
    assert ind.shape == (1, 2, 2, 2)
    assert ind[0, 0].tolist() == [[0, 1], [0, 1]]
    assert ind[0, 1].tolist() == [[0, 0], [1, 0]]


def test_one_hot_planes_rejects_bad_labels():
    with pytest.raises(NumsnetError, match=r"0\.\.1"):
        one_hot_planes(torch.tensor([[[0, 2]]]), 2, exclusive=True)
    with pytest.raises(NumsnetError, match=r"0\.\.2"):
        one_hot_planes(torch.tensor([[[0, 3]]]), 2, exclusive=False)
    with pytest.raises(NumsnetError, match="integer"):
        one_hot_planes(torch.tensor([[[0.0, 1.0]]]), 2, exclusive=True)


def test_dice_exclusive_by_hand():
    logits, labels = exclusive_case()
    # class 1: |P∩G| = 3/4 + 1/2 + 1/4 = 3/2, |P| = 7/4, |G| = 3
    dice1 = (2 * 1.5 + 1) / (1.75 + 3 + 1)
    # class 0: |P∩G| = 3/4, |P| = 1/4 + 3/4 + 1/2 + 3/4 = 9/4, |G| = 1
    dice0 = (2 * 0.75 + 1) / (2.25 + 1 + 1)
    expected = 1 - (dice0 + dice1) / 2
    assert dice_loss(logits, labels, exclusive=True).item() == pytest.approx(expected, abs=1e-6)


def test_dice_independent_by_hand():
    logits, labels = independent_case()
    dice_a = (2 * 0.75 + 1) / (1.75 + 1 + 1)  # |P∩G| = 3/4, |P| = 7/4, |G| = 1
    dice_b = (2 * 1.5 + 1) / (2.25 + 2 + 1)  # |P∩G| = 3/2, |P| = 9/4, |G| = 2
    expected = 1 - (dice_a + dice_b) / 2
    assert dice_loss(logits, labels, exclusive=False).item() == pytest.approx(expected, abs=1e-6)


def test_dice_smoothing_parameter():
    logits, labels = exclusive_case()
    dice1 = (2 * 1.5) / (1.75 + 3)
    dice0 = (2 * 0.75) / (2.25 + 1)
    got = dice_loss(logits, labels, exclusive=True, smooth=0.0).item()
    assert got == pytest.approx(1 - (dice0 + dice1) / 2, abs=1e-6)


def test_bce_and_ce_exclusive_by_hand():
    logits, labels = exclusive_case()
    # each plane: the probability given to the right answer is 3/4, 3/4, 1/2, 1/4
    per_plane = -(2 * math.log(0.75) + math.log(0.5) + math.log(0.25))
    assert bce_loss(logits, labels, True).item() == pytest.approx(2 * per_plane / 8, abs=1e-6)
    # categorical: p(true class) per pixel is 3/4, 3/4, 1/2, 1/4
    assert ce_loss(logits, labels, True).item() == pytest.approx(per_plane / 4, abs=1e-6)


def test_bce_independent_by_hand_and_ce_falls_back():
    logits, labels = independent_case()
    # plane 0: right-answer probabilities 3/4, 3/4, 1/2, 3/4; plane 1: 1/2, 3/4, 3/4, 3/4
    expected = -(6 * math.log(0.75) + 2 * math.log(0.5)) / 8
    assert bce_loss(logits, labels, False).item() == pytest.approx(expected, abs=1e-6)
    assert ce_loss(logits, labels, False).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("exclusive", [True, False])
def test_bdl_is_half_bce_plus_dice(exclusive):
    logits, labels = exclusive_case() if exclusive else independent_case()
    bce = bce_loss(logits, labels, exclusive).item()
    dice = dice_loss(logits, labels, exclusive).item()
    assert bdl_loss(logits, labels, exclusive).item() == pytest.approx(bce / 2 + dice, abs=1e-6)


@pytest.mark.parametrize("exclusive", [True, False])
def test_perfect_prediction_gives_small_dice_loss(exclusive):
    labels = torch.tensor([[[0, 1, 2], [2, 1, 0], [1, 1, 2]]])
    planes = one_hot_planes(labels, 3 if exclusive else 2, exclusive)
    logits = 30.0 * planes - 15.0
    assert dice_loss(logits, labels, exclusive).item() < 1e-4
    assert bce_loss(logits, labels, exclusive).item() < 1e-4
    wrong = -logits
    assert dice_loss(wrong, labels, exclusive).item() > 0.5


@pytest.mark.parametrize("loss", ALL_LOSSES)
@pytest.mark.parametrize("exclusive", [True, False])
def test_masked_pixels_have_no_influence(loss, exclusive):
    gen = torch.Generator().manual_seed(1)
    channels = 3
    logits = torch.randn(2, channels, 4, 5, generator=gen)
    labels = torch.randint(0, channels, (2, 4, 5), generator=gen)
    mask = torch.rand(2, 4, 5, generator=gen) > 0.4
    value = loss(logits, labels, exclusive, mask)

    other_logits = torch.where(mask.unsqueeze(1), logits, 50 * torch.randn(logits.shape))
    other_labels = torch.where(mask, labels, torch.full_like(labels, 255))  # any value
    other_logits.requires_grad_(True)
    other = loss(other_logits, other_labels, exclusive, mask)
    assert other.item() == pytest.approx(value.item(), abs=1e-6)
    other.backward()
    grad = other_logits.grad
    assert torch.all(grad[~mask.unsqueeze(1).expand_as(grad)] == 0)
    assert grad[mask.unsqueeze(1).expand_as(grad)].abs().sum() > 0


@pytest.mark.parametrize("loss", ALL_LOSSES)
@pytest.mark.parametrize("exclusive", [True, False])
def test_empty_mask_gives_zero_with_gradient(loss, exclusive):
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    labels = torch.ones(1, 3, 3, dtype=torch.long)
    value = loss(logits, labels, exclusive, torch.zeros(1, 3, 3, dtype=torch.bool))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(logits.grad).all() and torch.all(logits.grad == 0)


def test_float_mask_is_accepted():
    logits, labels = exclusive_case()
    float_mask = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    assert dice_loss(logits, labels, True, float_mask).item() == pytest.approx(
        dice_loss(logits, labels, True, float_mask.bool()).item()
    )


@pytest.mark.parametrize("name", ["bdl", "dice", "ce"])
@pytest.mark.parametrize("exclusive", [True, False])
def test_gradient_descent_learns_the_labels(name, exclusive):
    loss = get_loss(name)
    labels = torch.tensor([[[0, 1, 2, 2], [1, 1, 0, 2]]])
    logits = torch.zeros(1, 3 if exclusive else 2, 2, 4, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=5.0)
    first = None
    for _ in range(60):
        opt.zero_grad()
        value = loss(logits, labels, exclusive)
        first = value.item() if first is None else first
        value.backward()
        opt.step()
    assert value.item() < 0.5 * first
    if exclusive:
        predicted = logits.argmax(1)
    else:
        probs = torch.sigmoid(logits)
        predicted = torch.where(probs.max(1).values >= 0.5, probs.argmax(1) + 1, 0)
    assert torch.equal(predicted, labels)


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_autocast_on_cpu_computes_in_float32(loss):
    gen = torch.Generator().manual_seed(2)
    conv = torch.nn.Conv2d(1, 3, 1)
    image = torch.randn(2, 1, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (2, 4, 4), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(image)
        assert logits.dtype == torch.bfloat16
        value = loss(logits, labels, True)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(loss(logits.float(), labels, True).item(), abs=1e-6)


def test_shape_mismatch_says_both_shapes():
    with pytest.raises(NumsnetError, match=r"\(1, 2, 2, 2\).*\(1, 3, 3\)"):
        dice_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 3, dtype=torch.long), True)
    with pytest.raises(NumsnetError, match=r"\(1, 2, 3\)"):
        bce_loss(
            torch.zeros(1, 2, 2, 2),
            torch.zeros(1, 2, 2, dtype=torch.long),
            True,
            torch.ones(1, 2, 3, dtype=torch.bool),
        )


def test_get_loss_names_and_unknown():
    assert get_loss("bdl") is bdl_loss
    assert get_loss("dice") is dice_loss
    assert get_loss("ce") is ce_loss
    with pytest.raises(NumsnetError, match="bdl, ce, dice") as info:
        get_loss("focal")
    assert "focal" in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_cuda_autocast_matches_float32(loss):
    gen = torch.Generator().manual_seed(3)
    conv = torch.nn.Conv2d(1, 3, 1).cuda()
    image = torch.randn(2, 1, 8, 8, generator=gen).cuda()
    labels = torch.randint(0, 3, (2, 8, 8), generator=gen).cuda()
    mask = torch.rand(2, 8, 8, generator=gen).cuda() > 0.3
    with torch.autocast("cuda", dtype=torch.float16):
        logits = conv(image)
        value = loss(logits, labels, True, mask)
        value_ind = loss(logits[:, :2], labels.clamp(max=2), False, mask)
    assert value.dtype == torch.float32 and value_ind.dtype == torch.float32
    assert value.item() == pytest.approx(loss(logits.float(), labels, True, mask).item(), abs=1e-5)
    value.backward()
    assert torch.isfinite(conv.weight.grad).all()
