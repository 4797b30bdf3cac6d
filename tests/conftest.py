"""Shared fixtures: tiny model configs, fast training settings, the sample, toy stacks.

Everything here is sized to run on a CPU in well under a second per training step:
widths (4, 8, 8, 8, 8), 32 x 32 slices, one to a few epochs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.data.dataset import TrainingStack
from napari_numsnet.engine import threads
from toys import square_images

# Two shared cores: one intra-op thread avoids the contention that makes tiny
# convolutions many times slower with two.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_thread_policy_between_tests():
    """Each test starts without a thread policy and at one torch thread, and leaves so.

    A command run by one test (``cli.main``) applies the automatic policy; left in force,
    the trainer's between-epoch :func:`~napari_numsnet.engine.threads.revisit` would change
    the thread count of later tests with the machine's load, and with it the summation
    order of their reductions (two identical runs then differ in the last bits).
    """
    threads.reset()
    torch.set_num_threads(1)
    yield
    threads.reset()
    torch.set_num_threads(1)


#: Filters per depth of every tiny test model.
TINY_WIDTHS = (4, 8, 8, 8, 8)


@pytest.fixture
def tiny_config() -> Callable[..., ModelConfig]:
    """``tiny_config(name="numsnet", num_classes=2, **changes)``: a tiny ModelConfig."""

    def make(name: str = "numsnet", num_classes: int = 2, **changes) -> ModelConfig:
        return ModelConfig(name, num_classes=num_classes, widths=TINY_WIDTHS, **changes)

    return make


@pytest.fixture
def fast_training() -> TrainConfig:
    """One epoch, batch 2, no augmentation, float32 on the CPU."""
    return TrainConfig(
        epochs=1, batch_size=2, learning_rate=1e-3, augment=False, amp=False, device="cpu"
    )


@pytest.fixture
def pre32() -> PreprocessConfig:
    """Min-max scaling, slices resized to 32 x 32."""
    return PreprocessConfig(size=32)


@pytest.fixture
def square_stack() -> Callable[..., TrainingStack]:
    """``square_stack(n=6, seed=0, name="stack")``: the toy problem as a TrainingStack."""

    def make(n: int = 6, seed: int = 0, name: str = "stack") -> TrainingStack:
        images, labels = square_images(n, seed=seed)
        return TrainingStack(images, labels, np.arange(n), name)

    return make


@pytest.fixture
def synthetic_volume() -> tuple[np.ndarray, np.ndarray]:
    """A small CT-like stack ``(10, 40, 36)`` in HU with three classes, and its labels.

    A body disc of 40 HU in air (-1000 HU), a bright bone square (class 2, 700 HU) and a
    dark lung blob (class 1, -800 HU) whose position drifts from slice to slice.
    """
    rng = np.random.default_rng(1)
    z, h, w = 10, 40, 36
    yy, xx = np.mgrid[:h, :w]
    image = np.full((z, h, w), -1000.0, dtype=np.float32)
    labels = np.zeros((z, h, w), dtype=np.uint8)
    body = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < 17**2
    for k in range(z):
        image[k][body] = 40.0
        lung = (yy - 14) ** 2 + (xx - 10 - k) ** 2 < 5**2
        image[k][lung] = -800.0
        labels[k][lung] = 1
        image[k, 24:30, 15:21] = 700.0
        labels[k, 24:30, 15:21] = 2
    image += rng.normal(0.0, 10.0, image.shape).astype(np.float32)
    return image, labels


@pytest.fixture(scope="session")
def sample():
    """The shipped CT sample (30 x 122 x 101, HU, five classes); read once."""
    from napari_numsnet.pipeline import load_sample

    return load_sample()
