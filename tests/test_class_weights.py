"""Class weights of the cross-entropy (``TrainConfig.class_weights``) and their use by the
self-learning loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.data.dataset import StackSample, TrainingStack
from napari_numsnet.engine.class_weights import annotated_pixel_counts, frequency_weights
from napari_numsnet.engine.losses import ce_loss, dice_ce_loss, dice_loss
from napari_numsnet.engine.trainer import fit
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import MODELS, create_model
from napari_numsnet.pseudolabel import KMeansConfig
from napari_numsnet.workflows.selflearn import SelfLearningConfig, self_learning
from toys import square_images


def test_weights_are_the_cube_root_of_how_much_rarer_a_class_is():
    weights = frequency_weights(np.array([1000, 8, 1, 0]))
    assert weights.tolist() == pytest.approx([1.0, 5.0, 10.0, 1.0])
    assert frequency_weights(np.zeros(3, np.int64)).tolist() == [1.0, 1.0, 1.0]


def test_only_annotated_slices_are_counted():
    labels = np.zeros((3, 4, 4), np.int64)
    labels[0, 0, :2] = 1  # annotated: 2 pixels of class 1
    labels[1] = 2  # not annotated: ignored whatever it holds
    sample = StackSample(np.zeros((3, 4, 4)), labels, np.array([True, False, True]))
    slices = TrainingStack(np.zeros((1, 4, 4)), np.full((1, 4, 4), 2), np.array([0]))
    counts = annotated_pixel_counts([sample, slices], 3)
    assert counts.tolist() == [30, 2, 16]


def _logits_and_labels(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 6, 6, generator=g, requires_grad=True)
    labels = torch.randint(0, 3, (2, 6, 6), generator=g)
    mask = torch.rand(2, 6, 6, generator=g) > 0.3
    return logits, labels, mask


def test_the_cross_entropy_weighs_each_pixel_by_its_class():
    logits, labels, mask = _logits_and_labels()
    weights = torch.tensor([1.0, 2.0, 7.0])
    log_p = torch.log_softmax(logits.detach(), dim=1)
    nll = -log_p.gather(1, labels[:, None])[:, 0]
    expected = (weights[labels] * nll)[mask].mean()
    value = ce_loss(logits, labels, True, mask, class_weights=weights)
    assert float(value) == pytest.approx(float(expected), rel=1e-5)
    both = dice_ce_loss(logits, labels, True, mask, class_weights=weights)
    dice = dice_loss(logits, labels, True, mask)
    assert float(both) == pytest.approx(float(dice + expected), rel=1e-5)


def test_weights_of_one_change_nothing():
    logits, labels, mask = _logits_and_labels(1)
    ones = torch.ones(3)
    for loss in (ce_loss, dice_ce_loss):
        plain = loss(logits, labels, True, mask)
        weighted = loss(logits, labels, True, mask, class_weights=ones)
        assert float(weighted) == pytest.approx(float(plain), rel=1e-6)


def _stack() -> StackSample:
    images, labels = square_images(8, size=32, seed=0, side=6)
    labels[:, 0, :3] = 2  # a rare third class
    annotated = np.zeros(8, bool)
    annotated[[1, 4, 6]] = True
    return StackSample(images, labels, annotated, "stack")


def _recipe(**changes) -> TrainConfig:
    base = TrainConfig(
        steps=2, batch_size=2, learning_rate=1e-2, loss="dice_ce", augment=True, amp=False,
        device="cpu", class_weights="frequency",
    )  # fmt: skip
    return base.replace(**changes)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_with_class_weights(name):
    net = create_model(ModelConfig(name, num_classes=3, widths=(4, 4, 8, 8, 8)))
    stack = _stack()
    result = fit(net, [stack], _recipe())
    counts = annotated_pixel_counts([stack], 3)
    assert result.record["class_weights"] == pytest.approx(
        frequency_weights(counts).tolist(), abs=1e-4
    )
    assert result.record["class_weights"][2] > result.record["class_weights"][1] > 1.0
    assert np.isfinite([e["loss"] for e in result.record["epochs"]]).all()


def test_no_weights_by_default_and_weights_change_the_run():
    def trained(**changes):
        torch.manual_seed(0)
        net = create_model(ModelConfig("drsegunet", num_classes=3, widths=(4, 4, 8, 8, 8)))
        result = fit(net, [_stack()], _recipe(steps=3, **changes))
        return result.record, result.model.state_dict()

    plain_record, plain = trained(class_weights="none")
    weighted_record, weighted = trained()
    assert "class_weights" not in plain_record and "class_weights" in weighted_record
    assert TrainConfig().class_weights == "none"
    assert not all(torch.equal(plain[k], weighted[k]) for k in plain)


def test_weights_without_a_cross_entropy_or_for_independent_classes_are_refused():
    net = create_model(ModelConfig("drsegunet", num_classes=3, widths=(4, 4, 8, 8, 8)))
    with pytest.raises(NumsnetError, match="'bdl' loss"):
        fit(net, [_stack()], _recipe(loss="bdl"))
    planes = create_model(
        ModelConfig("drsegunet", num_classes=2, widths=(4, 4, 8, 8, 8), exclusive=False)
    )
    with pytest.raises(NumsnetError, match="independent classes"):
        fit(planes, [_stack()], _recipe())


def _chest(z: int = 6, n: int = 48) -> np.ndarray:
    """Air, a body, two lungs with a small dense spot: k-means' classes, one of them tiny."""
    rows, cols = np.mgrid[:n, :n]
    body = ((rows - 24) / 20) ** 2 + ((cols - 24) / 22) ** 2 <= 1
    lungs = (((rows - 22) / 11) ** 2 + ((cols - 15) / 6) ** 2 <= 1) | (
        ((rows - 22) / 11) ** 2 + ((cols - 33) / 6) ** 2 <= 1
    )
    image = np.full((z, n, n), -1000.0)
    image[:, body] = 40.0
    image[1:-1, lungs] = -850.0
    image[1:-1, 20:23, 14:17] = -300.0
    return (image + np.random.default_rng(0).normal(0, 10, image.shape)).astype(np.float32)


@pytest.mark.parametrize(
    ("loss", "exclusive", "expected"),
    [("dice_ce", True, "frequency"), ("bdl", True, "none"), ("dice_ce", False, "none")],
    ids=["dice_ce", "bdl", "independent planes"],
)
def test_self_learning_weighs_its_classes_where_the_run_can(loss, exclusive, expected):
    training = TrainConfig(
        steps=2, batch_size=2, loss=loss, device="cpu", amp=False, augment=False
    )
    classes = 3 if exclusive else 2  # background and k = 2 k-means classes either way
    model = ModelConfig(
        "drsegunet", num_classes=classes, widths=(4, 8, 8, 8, 8), exclusive=exclusive
    )
    result = self_learning(
        _chest(),
        model,
        training,
        KMeansConfig(k=2),
        SelfLearningConfig(levels=1),
        preprocess=PreprocessConfig(size=32, window=(-1000.0, 400.0)),
    )
    level = result.levels[1]
    assert level.checkpoint is not None
    assert level.checkpoint.train_config.class_weights == expected
    assert ("class_weights" in level.checkpoint.record) == (expected == "frequency")
    unweighted_note = any("not weighted" in note for note in result.notes)
    assert unweighted_note == (expected == "none")
