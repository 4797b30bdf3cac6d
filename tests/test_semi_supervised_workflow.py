"""The semi-supervised term through the training workflow (what the CLI, the demo and the
plugin run): applied to the slice models with exclusive classes, on the unannotated
slices of the whole stacks, and left out, with the reason in the record, for every other
model of the registry instead of failing the run."""

from __future__ import annotations

import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine import step as step_module
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import MODELS, create_model
from napari_numsnet.models.base import ModelKind

WIDTHS = (4, 4, 8, 8, 8)


def toy_stack() -> pipeline.AnnotatedStack:
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (10, 32, 32)).astype(np.float32)
    labels = np.zeros((10, 32, 32), np.uint8)
    labels[:, 8:20, 6:18] = 1
    image += labels
    return pipeline.AnnotatedStack(image, labels, [2, 6], [4], name="toy")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registry_model_trains_with_the_term_asked_for(name, monkeypatch):
    calls = []
    original = step_module.consistency_loss

    def spy(model, unlabelled, *args):
        calls.append(unlabelled.shape[0])
        return original(model, unlabelled, *args)

    monkeypatch.setattr(step_module, "consistency_loss", spy)
    config = TrainConfig(
        steps=5,
        batch_size=2,
        augment=True,
        amp=False,
        device="cpu",
        semi_supervised=1.0,
        confidence=0.0,
        strong_view="unimatch",
    )
    model = ModelConfig(name, num_classes=2, widths=WIDTHS)
    checkpoint = pipeline.train(
        toy_stack(), model, config, PreprocessConfig(size=32), ClassTable.default(2)
    )
    net = create_model(model)
    if net.kind is ModelKind.SLICE:
        assert calls == [2, 2, 2, 2]  # from a fifth of the 5 steps on, 2 unannotated slices
        assert "semi_supervised_skipped" not in checkpoint.record
        assert checkpoint.train_config.semi_supervised == 1.0
    else:
        assert calls == []
        assert f"is a {net.kind.value} model" in checkpoint.record["semi_supervised_skipped"]
        assert checkpoint.train_config.semi_supervised == 0.0


def test_independent_classes_train_without_the_term():
    config = TrainConfig(steps=2, batch_size=2, amp=False, device="cpu", semi_supervised=1.0)
    model = ModelConfig("drsegunet", num_classes=1, widths=WIDTHS, exclusive=False)
    checkpoint = pipeline.train(
        toy_stack(), model, config, PreprocessConfig(size=32), ClassTable.default(2)
    )
    assert "independent classes" in checkpoint.record["semi_supervised_skipped"]


def test_the_term_waits_for_enough_annotated_slices(monkeypatch):
    calls = []
    original = step_module.consistency_loss

    def spy(model, unlabelled, *args):
        calls.append(unlabelled.shape[0])
        return original(model, unlabelled, *args)

    monkeypatch.setattr(step_module, "consistency_loss", spy)
    model = ModelConfig("drsegunet", num_classes=2, widths=WIDTHS)
    config = TrainConfig(
        steps=5,
        batch_size=2,
        amp=False,
        device="cpu",
        semi_supervised=1.0,
        semi_supervised_min_slices=3,
        confidence=0.0,
    )
    pre, classes = PreprocessConfig(size=32), ClassTable.default(2)
    two = pipeline.train(toy_stack(), model, config, pre, classes)  # slices 2 and 6
    assert calls == []
    assert two.record["semi_supervised_skipped"].startswith("2 annotated slices, fewer than")
    stack = toy_stack()
    three = pipeline.AnnotatedStack(stack.image, stack.labels, [2, 6, 8], [4], name="toy")
    resumed = pipeline.train(three, model, config.replace(steps=5), resume=two)
    assert calls == [2, 2, 2, 2]
    assert "semi_supervised_skipped" not in resumed.record  # the term runs now


def test_without_unannotated_slices_the_record_says_the_term_had_nothing(monkeypatch):
    """One-slice stacks, every slice annotated (the COVID split): nothing to learn from."""
    calls = []
    monkeypatch.setattr(step_module, "consistency_loss", lambda *a: calls.append(1))
    stack = toy_stack()
    singles = [
        pipeline.AnnotatedStack(stack.image[z : z + 1], stack.labels[z : z + 1], [0], name=f"s{z}")
        for z in range(4)
    ]
    config = TrainConfig(steps=3, batch_size=2, amp=False, device="cpu", semi_supervised=1.0)
    model = ModelConfig("drsegunet", num_classes=2, widths=WIDTHS)
    checkpoint = pipeline.train(singles, model, config, PreprocessConfig(size=32))
    assert calls == []
    assert checkpoint.record["semi_supervised_skipped"] == "no unannotated slice to learn from"
