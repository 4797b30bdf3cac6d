"""Windowing, normalisation, resizing and their inverses, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from napari_numsnet.config import PreprocessConfig
from napari_numsnet.data import (
    Preprocessor,
    apply_window,
    clip_percentiles,
    looks_like_hounsfield,
    minmax,
    resize_stack,
    zscore,
)
from napari_numsnet.errors import NumsnetError


def test_apply_window_clips():
    x = np.array([-2000, -1000, 0, 400, 3000], dtype=np.int16)
    out = apply_window(x, -1000, 400)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [-1000, -1000, 0, 400, 400])


def test_apply_window_empty_range():
    with pytest.raises(NumsnetError, match="empty"):
        apply_window(np.zeros(3), 5, 5)


def test_clip_percentiles_hand_values():
    x = np.arange(101, dtype=np.float32)  # the k-th percentile of 0..100 is k
    out = clip_percentiles(x, 5.0, 90.0)
    assert out.dtype == np.float32
    assert out.min() == 5.0 and out.max() == 90.0
    np.testing.assert_array_equal(out[5:91], x[5:91])
    np.testing.assert_array_equal(clip_percentiles(x, 0.0, 100.0), x)


def test_clipping_keeps_the_tissue_range_of_a_stack_with_a_bright_outlier():
    rng = np.random.default_rng(0)
    tissue = rng.uniform(100.0, 200.0, size=(4, 16, 16)).astype(np.float32)
    bright = tissue.copy()
    bright[0, 0, 0] = 5000.0  # one flow artefact
    plain = Preprocessor(PreprocessConfig(size=None))
    clipped = Preprocessor(PreprocessConfig(size=None, clip_percentiles=(0.5, 99.5)))
    # min-max alone squeezes the tissue into a 50th of [0, 1]; clipped, it keeps the range
    assert np.ptp(plain.prepare(bright)[:, 1:, 1:]) < 0.05
    assert np.ptp(clipped.prepare(bright)[:, 1:, 1:]) > 0.95
    np.testing.assert_allclose(clipped.prepare(bright)[1:], clipped.prepare(tissue)[1:], atol=0.02)


@pytest.mark.parametrize("clip", [(50.0, 50.0), (-1.0, 99.0), (1.0, 101.0), (90.0, 10.0)])
def test_bad_clipping_percentiles_are_refused(clip):
    with pytest.raises(NumsnetError, match="percentiles"):
        Preprocessor(PreprocessConfig(clip_percentiles=clip))


def test_minmax_paper_eq1():
    x = np.array([[[-1000, 0], [500, 1000]]], dtype=np.int16)
    out = minmax(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[[0.0, 0.5], [0.75, 1.0]]])


def test_zscore_hand_values():
    x = np.array([1.0, 2.0, 3.0, 4.0])  # mean 2.5, std sqrt(1.25)
    np.testing.assert_allclose(zscore(x), (x - 2.5) / np.sqrt(1.25), rtol=1e-6)
    assert zscore(x).dtype == np.float32


@pytest.mark.parametrize("fn", [minmax, zscore])
def test_constant_is_rejected(fn):
    with pytest.raises(NumsnetError, match="nothing to learn"):
        fn(np.full((2, 3, 3), 7.0))


def test_resize_labels_nearest_keeps_dtype():
    labels = np.array([[[1, 2], [3, 4]]], dtype=np.uint8)
    out = resize_stack(labels, (4, 4), order=0)
    assert out.dtype == np.uint8
    expected = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    np.testing.assert_array_equal(out[0], expected)


def test_resize_images_linear_is_per_slice():
    # A horizontal ramp 0, 1, 2, 3 upsampled by 2: pixel centres at (i + 0.5) / 2 - 0.5.
    ramp = np.tile(np.arange(4, dtype=np.float32), (4, 1))
    stack = np.stack([ramp, 10 * ramp])
    out = resize_stack(stack, (8, 8), order=1)
    assert out.shape == (2, 8, 8) and out.dtype == np.float32
    expected_row = np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
    np.testing.assert_allclose(out[0, 3], expected_row, atol=1e-6)
    np.testing.assert_allclose(out[1, 3], 10 * expected_row, atol=1e-5)


def test_prepare_window_minmax_resize():
    stack = np.zeros((2, 4, 4), dtype=np.int16)
    stack[0] = -2000
    stack[1] = 1000
    stack[1, :2] = 0
    pre = Preprocessor(PreprocessConfig(window=(-1000, 400), normalization="minmax", size=8))
    out = pre.prepare(stack)
    assert out.shape == (2, 8, 8) and out.dtype == np.float32
    # Window: -2000 -> -1000 (0.0), 0 -> 1000/1400, 1000 -> 400 (1.0).
    np.testing.assert_allclose(out[0], 0.0)
    np.testing.assert_allclose(out[1, 0], 1000 / 1400, rtol=1e-6)
    np.testing.assert_allclose(out[1, 7], 1.0, rtol=1e-6)
    assert pre.pad == (0, 0)


def test_prepare_native_size_pads_to_16_with_minimum():
    stack = np.arange(2 * 17 * 20, dtype=np.float32).reshape(2, 17, 20)
    pre = Preprocessor(PreprocessConfig(normalization="zscore", size=None))
    out = pre.prepare(stack)
    assert out.shape == (2, 32, 32)
    assert pre.pad == (15, 12)
    normalised = zscore(stack)
    np.testing.assert_allclose(out[:, :17, :20], normalised)
    assert np.all(out[:, 17:, :] == normalised.min())
    assert np.all(out[:, :, 20:] == normalised.min())

    labels = np.ones((2, 17, 20), dtype=np.uint8)
    padded = pre.prepare_labels(labels)
    assert padded.dtype == np.int64 and padded.shape == (2, 32, 32)
    assert padded.sum() == 2 * 17 * 20
    restored = pre.restore_labels(padded, (17, 20))
    np.testing.assert_array_equal(restored, labels)
    prob = np.random.default_rng(0).random((3, 2, 32, 32))
    np.testing.assert_allclose(
        pre.restore_probabilities(prob, (17, 20)), prob[..., :17, :20], rtol=1e-6
    )


def test_labels_resize_and_restore_round_trip():
    # Upsample 6 -> 12 by nearest, then back: every label survives exactly.
    labels = np.random.default_rng(1).integers(0, 4, size=(3, 6, 6))
    pre = Preprocessor(PreprocessConfig(size=12))
    big = pre.prepare_labels(labels)
    assert big.dtype == np.int64 and big.shape == (3, 12, 12)
    np.testing.assert_array_equal(big[:, ::2, ::2], labels)
    np.testing.assert_array_equal(pre.restore_labels(big, (6, 6)), labels)


def test_restore_probabilities_linear():
    pre = Preprocessor(PreprocessConfig(size=4))
    prob = np.zeros((2, 1, 4, 4), dtype=np.float32)
    prob[0] = 0.25
    prob[1] = 0.75
    out = pre.restore_probabilities(prob, (9, 7))
    assert out.shape == (2, 1, 9, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], 0.25, rtol=1e-6)
    np.testing.assert_allclose(out[1], 0.75, rtol=1e-6)


def test_restore_rejects_wrong_grid():
    pre = Preprocessor(PreprocessConfig(size=8))
    with pytest.raises(NumsnetError, match="expected"):
        pre.restore_labels(np.zeros((2, 6, 6), np.int64), (20, 20))


def test_prepare_rejects_nan_and_counts_them():
    stack = np.zeros((2, 4, 4), dtype=np.float32)
    stack[0, 0, :3] = np.nan
    stack[1, 1, 1] = np.inf
    with pytest.raises(NumsnetError, match="4 NaN") as info:
        Preprocessor().prepare(stack)
    assert "Fix the file" in info.value.fix


def test_prepare_rejects_constant_and_non_3d():
    with pytest.raises(NumsnetError, match="nothing to learn"):
        Preprocessor().prepare(np.full((3, 4, 4), 5.0))
    with pytest.raises(NumsnetError, match="nothing to learn"):
        Preprocessor(PreprocessConfig(normalization="none")).prepare(np.ones((3, 4, 4)))
    with pytest.raises(NumsnetError, match=r"\(Z, H, W\)"):
        Preprocessor().prepare(np.zeros((4, 4)))
    with pytest.raises(NumsnetError, match="integers"):
        Preprocessor().prepare_labels(np.full((2, 4, 4), 0.5))


def test_looks_like_hounsfield():
    ct = np.array([-1024, -100, 40, 1500])
    mri = np.array([0, 120, 900, 1800])
    scaled = np.array([0.0, 0.3, 1.0])
    assert looks_like_hounsfield(ct)
    assert not looks_like_hounsfield(mri)
    assert not looks_like_hounsfield(scaled)
    assert not looks_like_hounsfield(np.array([-1000, -200]))  # span 800 < 1000
