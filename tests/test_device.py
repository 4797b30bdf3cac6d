"""Device choice, description, mixed-precision dtype and seeding."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from napari_numsnet.engine import device as device_mod
from napari_numsnet.engine.device import (
    amp_dtype,
    available_devices,
    describe_device,
    seed_everything,
    select_device,
)
from napari_numsnet.errors import NumsnetError


@pytest.fixture
def cpu_only(monkeypatch):
    """Pretend that neither CUDA nor MPS exists."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)


def test_auto_picks_cpu_without_accelerators(cpu_only):
    assert select_device("auto") == torch.device("cpu")
    assert select_device() == torch.device("cpu")
    assert available_devices() == ["cpu"]


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: True)
    assert select_device("auto").type == "cuda"
    assert available_devices() == ["cuda:0", "cuda:1", "mps", "cpu"]
    assert select_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(NumsnetError, match="cuda:0, cuda:1, mps, cpu"):
        select_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert select_device("auto") == torch.device("mps")


def test_unavailable_device_lists_the_available_ones(cpu_only):
    with pytest.raises(NumsnetError, match="'cuda' is not available") as info:
        select_device("cuda")
    assert "cpu" in info.value.fix
    with pytest.raises(NumsnetError, match="'mps' is not available"):
        select_device("mps")
    with pytest.raises(NumsnetError, match="not a device name"):
        select_device("gpu-please")


def test_explicit_cpu():
    assert select_device("cpu") == torch.device("cpu")


def test_describe_cpu_mentions_threads():
    count = torch.get_num_threads()
    text = describe_device(torch.device("cpu"))
    assert text.startswith(f"CPU, {count} thread{'s' if count != 1 else ''}")
    assert describe_device("cpu") == text


def test_amp_dtype_is_none_off_cuda():
    assert amp_dtype(torch.device("cpu")) is None
    assert amp_dtype("mps") is None


def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()  # noqa: NPY002


def test_seeding_is_reproducible():
    seed_everything(123)
    first = _draws()
    seed_everything(123)
    assert _draws() == first
    seed_everything(124)
    assert _draws() != first
    seed_everything(123)
    layer = torch.nn.Linear(3, 2)
    seed_everything(123)
    assert torch.equal(torch.nn.Linear(3, 2).weight, layer.weight)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "7"])
def test_bad_seed_is_refused(seed):
    with pytest.raises(NumsnetError, match="Seed"):
        seed_everything(seed)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_description_and_amp():
    device = select_device("auto")
    assert device.type == "cuda"
    props = torch.cuda.get_device_properties(0)
    text = describe_device(device)
    assert text.startswith(props.name) and text.endswith(" GiB)")
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert amp_dtype(device) == expected
    seed_everything(5)
    a = torch.rand(4, device=device)
    seed_everything(5)
    assert torch.equal(torch.rand(4, device=device), a)
