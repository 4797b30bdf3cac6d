"""The largest-component post-processing chosen on the validation slices after training
(as nnU-Net chooses it): recorded in the checkpoint for every model of the registry, and
applied by default when predicting, unless the caller says otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PredictConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from napari_numsnet.engine.postprocess import keep_largest_component
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import MODELS
from napari_numsnet.workflows.cascade import Cascade

WIDTHS = (4, 4, 8, 8, 8)


def toy_stack(val_slices=(3,)) -> pipeline.AnnotatedStack:
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (8, 32, 32)).astype(np.float32)
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[:, 8:20, 6:18] = 1
    labels[:, 22:28, 20:30] = 2
    image += labels
    return pipeline.AnnotatedStack(image, labels, [1, 2, 3, 4, 5, 6], val_slices, name="toy")


def trained(name: str = "unet", val_slices=(3,), steps: int = 3) -> Checkpoint:
    config = TrainConfig(steps=steps, batch_size=2, augment=True, amp=False, device="cpu")
    return pipeline.train(
        toy_stack(val_slices),
        ModelConfig(name, num_classes=3, widths=WIDTHS),
        config,
        PreprocessConfig(size=32),
        ClassTable.default(3),
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registry_model_records_its_validated_choice(name):
    checkpoint = trained(name)
    record = checkpoint.record["largest_component"]
    names = list(checkpoint.class_names)
    assert set(record) == {"classes", "dice_without", "dice_with"}
    assert set(record["dice_with"]) == set(record["dice_without"]) <= set(names[1:])
    better = [
        names.index(n)
        for n in record["dice_with"]
        if record["dice_with"][n] > record["dice_without"][n]
    ]
    assert sorted(record["classes"]) == sorted(better)  # chosen exactly where Dice rose
    assert checkpoint.largest_component == tuple(record["classes"])
    assert all(0.0 <= d <= 1.0 for d in record["dice_without"].values())


def test_without_validation_slices_nothing_is_chosen():
    checkpoint = trained(val_slices=())
    assert "largest_component" not in checkpoint.record
    assert checkpoint.largest_component == ()


def test_prediction_applies_the_checkpoints_choice_unless_told_otherwise(tmp_path):
    checkpoint = trained(steps=2)
    checkpoint.record["largest_component"] = {"classes": [1], "dice_without": {}, "dice_with": {}}
    path = save_checkpoint(checkpoint, tmp_path / "model.numsnet.pt")
    checkpoint = load_checkpoint(path)  # the choice travels in the file
    assert checkpoint.largest_component == (1,)
    image = toy_stack().image
    raw = pipeline.predict(checkpoint, image, PredictConfig(largest_component=())).labels
    default = pipeline.predict(checkpoint, image).labels  # PredictConfig() leaves it None
    assert np.array_equal(default, keep_largest_component(raw, [1]))
    told = pipeline.predict(checkpoint, image, PredictConfig(largest_component=(2,))).labels
    assert np.array_equal(told, keep_largest_component(raw, [2]))
    run = pipeline.make_predictor(checkpoint, PredictConfig())  # many stacks, one model
    assert np.array_equal(run(image).labels, default)
    cascade = Cascade(checkpoint, checkpoint, (1, 2))
    assert cascade.largest_component == (1,)


def test_the_choice_changes_what_is_predicted_when_the_raw_prediction_has_islands():
    checkpoint = trained(steps=2)  # two steps: a model that still predicts scattered pieces
    image = toy_stack().image
    raw = pipeline.predict(checkpoint, image, PredictConfig(largest_component=())).labels
    for value in (1, 2):
        checkpoint.record["largest_component"] = {"classes": [value]}
        cleaned = pipeline.predict(checkpoint, image).labels
        if not np.array_equal(cleaned, raw):
            assert np.array_equal(cleaned, keep_largest_component(raw, [value]))
            return
    pytest.fail("the briefly trained model predicts every class as one piece: nothing to show")
