"""A class annotated on training slices but on no validation slice still counts in the
choice of the best weights: it is scored on its training slices (every registry model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.data.dataset import StackSample
from napari_numsnet.engine import trainer as trainer_module
from napari_numsnet.engine import validation as validation_module
from napari_numsnet.engine.trainer import fit
from napari_numsnet.engine.validation import foreground_score, uncovered_classes
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import MODELS, create_model

NAMES = ["background", "class 1", "class 2"]
TINY = (4, 4, 8, 8, 8)
Z, SIDE = 10, 32
RECIPE = TrainConfig(
    steps=4, val_every=2, batch_size=2, augment=False, amp=False, device="cpu", learning_rate=1e-3
)


def two_class_stack(annotated=(1, 3, 7), val_slices=(3,)) -> pipeline.AnnotatedStack:
    """``(10, 32, 32)``: class 1 on every slice, class 2 only on slices 6 and above."""
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (Z, SIDE, SIDE)).astype(np.float32)
    labels = np.zeros((Z, SIDE, SIDE), np.uint8)
    labels[:, 4:12, 4:14] = 1
    labels[6:, 18:28, 16:26] = 2
    image += labels
    return pipeline.AnnotatedStack(image, labels, list(annotated), val_slices, name="toy")


def trained(name: str, stack: pipeline.AnnotatedStack | None = None):
    """A checkpoint of ``name`` (tiny widths) trained by ``RECIPE`` on ``stack``."""
    return pipeline.train(
        stack or two_class_stack(),
        ModelConfig(name, num_classes=3, widths=TINY),
        RECIPE,
        PreprocessConfig(size=SIDE),
        ClassTable.default(3),
    )


def sample(annotated) -> StackSample:
    stack = two_class_stack()
    mask = np.zeros(Z, bool)
    mask[list(annotated)] = True
    return StackSample(stack.image, stack.labels.astype(np.int64), mask, "toy")


def test_the_classes_no_validation_slice_shows():
    train, val = sample([1, 7]), sample([3])
    assert uncovered_classes([train], [val], NAMES, exclusive=True) == ["class 2"]
    assert uncovered_classes([train], [sample([8])], NAMES, exclusive=True) == []
    # Without validation slices nothing is chosen, so nothing is completed.
    assert uncovered_classes([train], [], NAMES, exclusive=True) == []
    # The background of exclusive classes is never a class of the score.
    empty_val = StackSample(train.images, np.ones_like(train.labels), train.annotated, "v")
    assert "background" not in uncovered_classes([train], [empty_val], NAMES, exclusive=True)


def test_training_slice_scores_count_as_classes_of_their_own():
    val = {"background": 1.0, "class 1": 0.8}
    assert foreground_score(val, NAMES, True) == pytest.approx(0.8)
    assert foreground_score(val, NAMES, True, {"class 2": 0.2}) == pytest.approx(0.5)
    # Predicted where a validation slice does not show it: its false positives count too.
    both = {"background": 1.0, "class 1": 0.8, "class 2": 0.0}
    assert foreground_score(both, NAMES, True, {"class 2": 0.6}) == pytest.approx(1.4 / 3)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_scores_an_unvalidated_class_on_its_training_slices(name):
    torch.manual_seed(0)
    record = trained(name).record
    assert record["scored_on_training_slices"] == ["class 2"]
    rounds = record["epochs"]
    assert len(rounds) == 2
    for entry in rounds:
        assert set(entry["train_dice"]) == {"class 2"}
        assert "class 1" in entry["val_dice"]
    best = next(e for e in rounds if e["step"] == record["best"]["step"])
    expected = foreground_score(best["val_dice"], NAMES, True, best["train_dice"])
    assert record["best"]["val_dice_mean"] == pytest.approx(expected)


def test_a_covered_class_is_not_scored_on_training_slices():
    checkpoint = trained("unet", two_class_stack(annotated=(1, 7, 8), val_slices=(8,)))
    assert "scored_on_training_slices" not in checkpoint.record
    assert all("train_dice" not in entry for entry in checkpoint.record["epochs"])


def test_the_best_weights_follow_the_class_only_training_slices_show(monkeypatch):
    """The validation slice scores the same every round; the round where the unvalidated
    class is learned best is the one kept (without it, the first round would be)."""
    calls: list[str] = []
    learned = iter([0.1, 0.9, 0.3])
    seen: list[dict[str, torch.Tensor]] = []

    def evaluate(model, stacks, names, device, direction="forward", predictions=None):
        if stacks and stacks[0].annotated[3]:  # the validation slice
            seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            calls.append("val")
            return {"background": 1.0, "class 1": 0.7}
        calls.append("train")
        return {"background": 1.0, "class 1": 1.0, "class 2": next(learned)}

    monkeypatch.setattr(trainer_module, "evaluate_stacks", evaluate)
    torch.manual_seed(0)
    model = create_model(ModelConfig("unet", num_classes=3, widths=TINY))
    result = fit(
        model,
        [sample([1, 7])],
        RECIPE.replace(steps=6),
        val_stacks=[sample([3])],
        class_names=NAMES,
    )
    assert calls == ["val", "train"] * 3
    assert result.record["best"] == {"step": 4, "val_dice_mean": pytest.approx(0.8)}
    final = result.model.state_dict()
    assert all(torch.equal(final[k], seen[1][k]) for k in final)
    # Only the class no validation slice shows is taken from the training slices.
    assert [set(e["train_dice"]) for e in result.record["epochs"]] == [{"class 2"}] * 3


@pytest.mark.parametrize("name", ["numsnet", "unetpp"])
def test_a_stack_shared_by_validation_and_training_is_predicted_once(name, monkeypatch):
    """A sequence model predicts the whole stack for both scores: once per round."""
    predicted: list[int] = []
    real = validation_module.predict_stack

    def counting(model, images, config, **kwargs):
        predicted.append(len(images) if kwargs.get("slices") is None else len(kwargs["slices"]))
        return real(model, images, config, **kwargs)

    monkeypatch.setattr(validation_module, "predict_stack", counting)
    torch.manual_seed(0)
    rounds = len(trained(name).record["epochs"])
    assert rounds == 2
    # After training, the largest-component choice predicts the validation stack whole.
    if name == "numsnet":  # the whole stack, once a round
        assert predicted == [Z] * rounds + [Z]
    else:  # a slice model predicts only the slices it scores: the held-out one, then two
        assert predicted == [1, 2] * rounds + [Z]
