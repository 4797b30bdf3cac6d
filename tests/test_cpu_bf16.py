"""bfloat16 autocast in training on CPUs that compute it natively (``TrainConfig.cpu_bf16``):
taken where the CPU has bfloat16 units, refused silently (float32) where it would be
emulated, recorded in the training record, and working for every model of the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine import device as device_module
from napari_numsnet.engine import step as step_module
from napari_numsnet.engine.device import amp_dtype, cpu_computes_bf16
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import MODELS, create_model
from napari_numsnet.models.base import ModelKind


def toy_stack() -> pipeline.AnnotatedStack:
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (8, 32, 32)).astype(np.float32)
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[:, 8:20, 6:18] = 1
    image += labels
    return pipeline.AnnotatedStack(image, labels, [1, 2, 3, 4, 5, 6], [3], name="toy")


def train(name: str, cpu_bf16: bool):
    config = TrainConfig(
        steps=2, batch_size=2, augment=True, amp=False, device="cpu", cpu_bf16=cpu_bf16
    )
    model = ModelConfig(name, num_classes=2, widths=(4, 4, 8, 8, 8))
    return pipeline.train(
        toy_stack(), model, config, PreprocessConfig(size=32), ClassTable.default(2)
    )


def test_the_probe_answers_and_amp_dtype_follows_it(monkeypatch):
    assert isinstance(cpu_computes_bf16(), bool)
    assert amp_dtype("cpu") is None  # never without being asked
    monkeypatch.setattr(device_module, "cpu_computes_bf16", lambda: True)
    assert amp_dtype("cpu", cpu_bf16=True) == torch.bfloat16
    assert amp_dtype("mps", cpu_bf16=True) is None
    monkeypatch.setattr(device_module, "cpu_computes_bf16", lambda: False)
    assert amp_dtype("cpu", cpu_bf16=True) is None


def test_without_bf16_units_the_run_is_the_float32_run(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_computes_bf16", lambda: False)
    plain, asked = train("drsegunet", False), train("drsegunet", True)
    assert asked.record["precision"] == plain.record["precision"] == "float32"
    assert all(torch.equal(plain.state_dict[k], asked.state_dict[k]) for k in plain.state_dict)


def test_with_bf16_units_the_steps_run_under_bf16_autocast(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_computes_bf16", lambda: True)
    dtypes = []
    original = step_module.supervised_loss

    def spy(loss_fn, out, labels, exclusive, mask):
        dtypes.append(out.logits.dtype)
        return original(loss_fn, out, labels, exclusive, mask)

    monkeypatch.setattr(step_module, "supervised_loss", spy)
    checkpoint = train("drsegunet", True)
    assert checkpoint.record["precision"] == "bfloat16"
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    weights = checkpoint.state_dict
    assert all(v.dtype != torch.bfloat16 for v in weights.values())  # float32 master weights


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registry_model_trains_under_cpu_bf16(name, monkeypatch):
    """Tiny widths, augmentation on; bf16 is emulated where the CPU has no units, so this
    checks the numerics, not the speed: finite weights that differ from float32's. 3D
    models train in float32 whatever is asked."""
    monkeypatch.setattr(device_module, "cpu_computes_bf16", lambda: True)
    plain, mixed = train(name, False), train(name, True)
    if create_model(ModelConfig(name, num_classes=2)).kind is ModelKind.VOLUME:
        assert mixed.record["precision"] == "float32"
        assert all(torch.equal(plain.state_dict[k], v) for k, v in mixed.state_dict.items())
        return
    assert mixed.record["precision"] == "bfloat16"
    floating = [k for k, v in mixed.state_dict.items() if v.dtype.is_floating_point]
    assert all(torch.isfinite(mixed.state_dict[k]).all() for k in floating)
    assert not all(torch.equal(plain.state_dict[k], mixed.state_dict[k]) for k in floating)
