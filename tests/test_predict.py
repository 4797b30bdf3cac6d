"""Prediction: chunking, direction of travel, original size, slice ranges, label maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet.config import PredictConfig, PreprocessConfig
from napari_numsnet.data.preprocess import Preprocessor
from napari_numsnet.engine.predict import (
    predict_stack,
    predict_volume,
    probabilities_to_labels,
)
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import MODELS, create_model
from napari_numsnet.models.base import ModelKind

CPU = dict(device="cpu")


@pytest.fixture
def numsnet(tiny_config):
    """A tiny 3-class NUMSnet with random weights, in eval mode."""
    torch.manual_seed(0)
    return create_model(tiny_config("numsnet", 3)).eval()


@pytest.fixture
def images():
    """``(7, 32, 32)`` float32 slices in [0, 1]."""
    return np.random.default_rng(0).random((7, 32, 32), dtype=np.float32)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_chunk_size_does_not_change_the_result(numsnet, images, chunk):
    one_pass = predict_stack(numsnet, images, PredictConfig(batch_size=len(images), **CPU))
    chunked = predict_stack(numsnet, images, PredictConfig(batch_size=chunk, **CPU))
    assert chunked.shape == (3, 7, 32, 32)
    np.testing.assert_allclose(chunked, one_pass, atol=1e-5)


def test_the_carry_matters(numsnet, images):
    """Each slice predicted on its own differs from the ordered pass: the carry is used."""
    ordered = predict_stack(numsnet, images, PredictConfig(batch_size=2, **CPU))
    alone = np.concatenate(
        [predict_stack(numsnet, images[i : i + 1], PredictConfig(**CPU)) for i in range(7)],
        axis=1,
    )
    np.testing.assert_allclose(alone[:, 0], ordered[:, 0], atol=1e-5)  # same start
    assert np.abs(alone[:, 1:] - ordered[:, 1:]).max() > 1e-4


def test_backward_is_the_flipped_stack_flipped_back(numsnet, images):
    backward = predict_stack(numsnet, images, PredictConfig("backward", batch_size=3, **CPU))
    flipped = predict_stack(numsnet, images[::-1].copy(), PredictConfig(batch_size=3, **CPU))
    np.testing.assert_allclose(backward, flipped[:, ::-1], atol=1e-5)
    forward = predict_stack(numsnet, images, PredictConfig(batch_size=3, **CPU))
    assert np.abs(backward - forward).max() > 1e-4


def test_both_is_the_mean_of_forward_and_backward(numsnet, images):
    config = PredictConfig(batch_size=2, **CPU)
    forward = predict_stack(numsnet, images, config)
    backward = predict_stack(numsnet, images, config.replace(direction="backward"))
    both = predict_stack(numsnet, images, config.replace(direction="both"))
    np.testing.assert_allclose(both, (forward + backward) / 2, atol=1e-6)


def test_direction_does_not_matter_for_slice_wise_models(tiny_config, images):
    torch.manual_seed(0)
    unet = create_model(tiny_config("unet", 3)).eval()
    forward = predict_stack(unet, images, PredictConfig(batch_size=3, **CPU))
    backward = predict_stack(unet, images, PredictConfig("backward", batch_size=3, **CPU))
    np.testing.assert_allclose(backward, forward, atol=1e-5)


@pytest.mark.parametrize("size", [None, 32])
def test_predict_volume_returns_the_original_size(numsnet, size):
    stack = np.random.default_rng(1).normal(100.0, 20.0, (5, 37, 53)).astype(np.float32)
    preprocess = PreprocessConfig(size=size)
    result = predict_volume(numsnet, stack, preprocess, PredictConfig(batch_size=2, **CPU))
    assert result.labels.shape == (5, 37, 53)
    assert result.labels.dtype == np.uint8
    assert result.probabilities.shape == (3, 5, 37, 53)
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(result.labels, result.probabilities.argmax(axis=0))
    # The same as predicting the network grid by hand and bringing it back.
    pre = Preprocessor(preprocess)
    grid = pre.prepare(stack)
    assert grid.shape[1:] == ((48, 64) if size is None else (32, 32))
    by_hand = predict_stack(numsnet, grid, PredictConfig(**CPU))
    if size is None:
        np.testing.assert_allclose(result.probabilities, by_hand[..., :37, :53], atol=1e-5)
    else:
        restored = pre.restore_probabilities(by_hand, (37, 53))
        np.testing.assert_allclose(result.probabilities, restored, atol=1e-5)


def test_slice_range_predicts_only_those_slices(numsnet, monkeypatch):
    with torch.no_grad():  # class 2 everywhere, so "not predicted" (0) is visible
        numsnet.head.bias.copy_(torch.tensor([0.0, 0.0, 20.0]))
    stack = np.random.default_rng(2).random((8, 32, 32), dtype=np.float32)
    seen = []
    forward = numsnet.forward

    def counting_forward(x, carry=None):
        seen.append(len(x))
        return forward(x, carry)

    monkeypatch.setattr(numsnet, "forward", counting_forward)
    result = predict_volume(
        numsnet, stack, PreprocessConfig(size=32), PredictConfig(**CPU), slice_range=(2, 5)
    )
    assert sum(seen) == 3
    assert np.all(result.labels[2:5] == 2)
    assert not result.labels[:2].any() and not result.labels[5:].any()
    assert not result.probabilities[:, :2].any() and not result.probabilities[:, 5:].any()
    np.testing.assert_allclose(result.probabilities[:, 2:5].sum(axis=0), 1.0, atol=1e-5)


def test_slice_range_uses_the_whole_stack_normalisation(numsnet):
    stack = np.random.default_rng(3).random((6, 32, 32), dtype=np.float32)
    stack[0] += 5.0  # the whole stack's maximum lies outside the range
    pre = PreprocessConfig(size=32)
    part = predict_volume(numsnet, stack, pre, PredictConfig(**CPU), slice_range=(3, 6))
    grid = Preprocessor(pre).prepare(stack)[3:6]
    expected = predict_stack(numsnet, grid, PredictConfig(**CPU))
    np.testing.assert_allclose(part.probabilities[:, 3:6], expected, atol=1e-5)


def test_independent_classes_use_the_threshold(tiny_config):
    torch.manual_seed(0)
    model = create_model(tiny_config("unet", 2, exclusive=False)).eval()
    stack = np.random.default_rng(4).random((3, 32, 32), dtype=np.float32)
    config = PredictConfig(threshold=0.4, **CPU)
    result = predict_volume(model, stack, PreprocessConfig(size=32), config)
    prob = result.probabilities
    assert prob.shape == (2, 3, 32, 32)
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    np.testing.assert_array_equal(result.labels, probabilities_to_labels(prob, False, 0.4))


def test_probabilities_to_labels_exclusive():
    prob = np.array(
        [
            [[0.7, 0.1], [0.2, 0.3]],
            [[0.2, 0.8], [0.3, 0.3]],
            [[0.1, 0.1], [0.5, 0.4]],
        ]
    )  # (C=3, H=2, W=2)
    labels = probabilities_to_labels(prob, exclusive=True)
    np.testing.assert_array_equal(labels, [[0, 1], [2, 2]])
    assert labels.dtype == np.uint8


def test_probabilities_to_labels_independent_planes():
    # Plane k is label k + 1; 0 where no plane reaches the threshold (paper eq. 3).
    prob = np.array(
        [
            [[0.2, 0.6], [0.6, 0.5]],
            [[0.3, 0.2], [0.9, 0.1]],
        ]
    )
    np.testing.assert_array_equal(probabilities_to_labels(prob, False, 0.5), [[0, 1], [2, 1]])
    np.testing.assert_array_equal(probabilities_to_labels(prob, False, 0.7), [[0, 0], [2, 0]])
    np.testing.assert_array_equal(probabilities_to_labels(prob, False, 0.25), [[2, 1], [2, 1]])


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(config=PredictConfig(batch_size=0, **CPU)), "batch_size"),
        (dict(config=PredictConfig(direction="sideways", **CPU)), "direction"),
    ],
)
def test_bad_predict_settings(numsnet, images, kwargs, words):
    with pytest.raises(NumsnetError, match=words):
        predict_stack(numsnet, images, **kwargs)


@pytest.mark.parametrize("slice_range", [(5, 5), (-1, 3), (2, 9)])
def test_slice_range_outside_the_stack(numsnet, images, slice_range):
    with pytest.raises(NumsnetError, match="outside the stack") as info:
        predict_volume(numsnet, images, PreprocessConfig(size=32), slice_range=slice_range)
    assert "0 <= start < stop <= 7" in info.value.fix


#: The models that predict slice by slice or along the stack (the 3D one refuses flips).
PLANAR = sorted(set(MODELS) - {n for n, s in MODELS.items() if s.kind is ModelKind.VOLUME})


@pytest.mark.parametrize("name", PLANAR)
def test_test_time_flips_average_the_four_flipped_predictions(tiny_config, images, name):
    torch.manual_seed(0)
    model = create_model(tiny_config(name, 3)).eval()
    mirrored = predict_stack(model, images, PredictConfig(mirror=True, batch_size=3, **CPU))
    expected = np.zeros_like(mirrored)
    for axes in [(), (-1,), (-2,), (-2, -1)]:
        flipped = np.flip(images, axes).copy() if axes else images
        prob = predict_stack(model, flipped, PredictConfig(batch_size=3, **CPU))
        expected += (np.flip(prob, axes) if axes else prob) / 4
    np.testing.assert_allclose(mirrored, expected, atol=1e-5)
    plain = predict_stack(model, images, PredictConfig(batch_size=3, **CPU))
    assert np.abs(mirrored - plain).max() > 1e-4


def test_test_time_flips_are_refused_for_the_3d_model(tiny_config, images):
    model = create_model(tiny_config("msdsunet", 3)).eval()
    with pytest.raises(NumsnetError, match="slice and sequence models"):
        predict_stack(model, images, PredictConfig(mirror=True, **CPU))
