"""NUMSnet runs in both orders (``TrainConfig.reverse_runs``): a model trained so predicts
with both directions averaged unless told otherwise, is validated that way while it
trains, and the command line, the cascade and the suggestions follow its checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from napari_numsnet import cli, pipeline
from napari_numsnet.config import ModelConfig, PredictConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine import validation
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import MODELS
from napari_numsnet.models.base import ModelKind
from napari_numsnet.presets import PRESETS
from napari_numsnet.workflows.cascade import Cascade
from napari_numsnet.workflows.prediction import with_checkpoint_defaults

CPU = PredictConfig(device="cpu")


def toy_stack() -> pipeline.AnnotatedStack:
    rng = np.random.default_rng(0)
    labels = np.zeros((10, 32, 32), np.uint8)
    for z in range(10):
        labels[z, 6 + z : 16 + z, 8:20] = 1
    image = rng.normal(0.0, 0.1, labels.shape).astype(np.float32) + labels
    return pipeline.AnnotatedStack(image, labels, [1, 4, 7, 8], [8], name="toy")


def train(name: str = "numsnet", **changes) -> Checkpoint:
    config = TrainConfig(steps=3, batch_size=2, run_length=4, amp=False, device="cpu")
    model = ModelConfig(name, num_classes=2, widths=(4, 4, 8, 8, 8))
    return pipeline.train(
        toy_stack(),
        model,
        config.replace(**changes),
        PreprocessConfig(size=32),
        ClassTable.default(2),
    )


SEQUENCE_MODELS = [name for name, spec in MODELS.items() if spec.kind is ModelKind.SEQUENCE]


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
@pytest.mark.parametrize(
    ("changes", "direction"),
    [
        (dict(reverse_runs=True), "both"),
        (dict(reverse_runs=False), "forward"),
        (dict(reverse_runs=True, augment=False), "forward"),  # no augmentation, no reversal
    ],
)
def test_the_checkpoint_predicts_in_the_direction_it_was_trained_for(name, changes, direction):
    assert TrainConfig(**changes).prediction_direction == direction
    checkpoint = train(name, **changes)
    assert checkpoint.direction == direction
    assert with_checkpoint_defaults(CPU, checkpoint).direction == direction
    assert with_checkpoint_defaults(CPU.replace(direction="backward"), checkpoint).direction == (
        "backward"  # the user's choice stands
    )
    image = toy_stack().image
    default = pipeline.predict(checkpoint, image, CPU, probabilities=True).probabilities
    chosen = CPU.replace(direction=direction)
    told = pipeline.predict(checkpoint, image, chosen, probabilities=True).probabilities
    np.testing.assert_array_equal(default, told)
    other = CPU.replace(direction="forward" if direction == "both" else "both")
    elsewhere = pipeline.predict(checkpoint, image, other, probabilities=True).probabilities
    assert np.abs(default - elsewhere).max() > 1e-6


def test_a_model_trained_on_runs_in_both_orders_is_validated_with_both(monkeypatch):
    seen: list[str | None] = []
    original = validation.predict_stack

    def spy(model, images, config, **kwargs):
        seen.append(config.direction)
        return original(model, images, config, **kwargs)

    monkeypatch.setattr(validation, "predict_stack", spy)
    train(reverse_runs=True)
    assert seen and set(seen) == {"both"}  # every validation round and the component choice
    seen.clear()
    train(reverse_runs=False)
    assert seen and set(seen) == {"forward"}


def test_the_fast_preset_trains_the_numsnet_family_on_runs_in_both_orders():
    fast = PRESETS["fast"].train
    assert fast.reverse_runs and fast.augment and fast.prediction_direction == "both"
    assert PRESETS["paper"].train.prediction_direction == "forward"  # the paper's one way


def test_a_cascade_predicts_in_its_inner_models_direction():
    region, inner = train(reverse_runs=False), train(reverse_runs=True)
    assert Cascade(region, inner, (1,)).direction == "both"


def test_the_command_line_leaves_the_direction_to_the_checkpoint_unless_told():
    args = cli.build_parser().parse_args(["predict", "--checkpoint", "m.pt", "--output", "o"])
    assert args.direction is None
    told = ["predict", "--checkpoint", "m.pt", "--output", "o", "--direction", "backward"]
    assert cli.build_parser().parse_args(told).direction == "backward"
