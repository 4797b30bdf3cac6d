"""Choosing the slices to annotate (Initial,Seq, Mid,Seq, Mid,Rand); finding annotated ones."""

from __future__ import annotations

import numpy as np
import pytest

from napari_numsnet.config import SamplingConfig
from napari_numsnet.data import annotated_slices, n_train_slices, select_slices
from napari_numsnet.errors import NumsnetError


def _check_split(split, n_slices, n_train, n_val):
    for part in (split.train, split.val):
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)
        assert part.size == 0 or (part.min() >= 0 and part.max() < n_slices)
    assert split.train.size == n_train
    assert split.val.size == n_val
    assert np.intersect1d(split.train, split.val).size == 0


def test_n_train_rounds_half_up_with_floor_of_one():
    assert n_train_slices(30, 0.1) == 3
    assert n_train_slices(25, 0.1) == 3  # 2.5 -> 3, not banker's 2
    assert n_train_slices(24, 0.1) == 2  # 2.4 -> 2
    assert n_train_slices(4, 0.1) == 1  # 0.4 -> at least 1


def test_initial_seq():
    split = select_slices(30, SamplingConfig(strategy="initial_seq"))
    np.testing.assert_array_equal(split.train, [0, 1, 2])
    _check_split(split, 30, 3, 1)  # 1% of 27 -> at least 1


def test_mid_seq_starts_at_middle():
    split = select_slices(31, SamplingConfig(strategy="mid_seq"))
    np.testing.assert_array_equal(split.train, [15, 16, 17])
    _check_split(split, 31, 3, 1)


def test_mid_seq_shifts_back_at_the_end():
    split = select_slices(10, SamplingConfig(strategy="mid_seq", fraction=0.8))
    np.testing.assert_array_equal(split.train, np.arange(2, 10))
    _check_split(split, 10, 8, 1)


def test_mid_rand_within_middle_half():
    n = 200
    split = select_slices(n, SamplingConfig(strategy="mid_rand", seed=3))
    _check_split(split, n, 20, 2)  # 1% of 180 = 1.8 -> 2
    # Window: 100 slices centred on slice 100, i.e. 50..149.
    assert split.train.min() >= 50 and split.train.max() <= 149
    assert np.any(np.diff(split.train) > 1)  # random, not consecutive


def test_mid_rand_window_at_least_n_train_wide():
    split = select_slices(10, SamplingConfig(strategy="mid_rand", fraction=0.9))
    _check_split(split, 10, 9, 1)


def test_mid_rand_deterministic_and_seed_dependent():
    config = SamplingConfig(strategy="mid_rand", seed=7)
    first, again = select_slices(300, config), select_slices(300, config)
    np.testing.assert_array_equal(first.train, again.train)
    np.testing.assert_array_equal(first.val, again.val)
    other = select_slices(300, config.replace(seed=8))
    assert not np.array_equal(first.train, other.train)


def test_val_fraction_of_the_rest():
    split = select_slices(100, SamplingConfig(strategy="initial_seq", val_fraction=0.1))
    _check_split(split, 100, 10, 9)  # 10% of the 90 remaining
    assert split.val.min() >= 10


def test_no_val_when_nothing_remains():
    split = select_slices(5, SamplingConfig(strategy="initial_seq", fraction=1.0))
    np.testing.assert_array_equal(split.train, np.arange(5))
    assert split.val.size == 0


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_slices(n):
    with pytest.raises(NumsnetError, match="at least 2"):
        select_slices(n, SamplingConfig())


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_out_of_range(fraction):
    with pytest.raises(NumsnetError, match=r"outside \(0, 1\]"):
        select_slices(30, SamplingConfig(fraction=fraction))


def test_unknown_strategy():
    with pytest.raises(NumsnetError, match="mid_rand"):
        select_slices(30, SamplingConfig(strategy="random"))  # type: ignore[arg-type]


def test_annotated_slices_from_labels():
    labels = np.zeros((6, 4, 4), dtype=np.uint8)
    labels[4, 1, 1] = 2
    labels[1, 0, 3] = 1
    np.testing.assert_array_equal(annotated_slices(labels), [1, 4])


def test_annotated_slices_from_record_includes_empty_slices():
    labels = np.zeros((6, 4, 4), dtype=np.uint8)
    out = annotated_slices(labels, recorded=[5, 2, 2, 0])
    np.testing.assert_array_equal(out, [0, 2, 5])
    assert out.dtype == np.int64


def test_annotated_slices_errors():
    labels = np.zeros((6, 4, 4), dtype=np.uint8)
    with pytest.raises(NumsnetError, match="No slice is annotated") as info:
        annotated_slices(labels)
    assert "mark empty slices as done" in info.value.fix
    with pytest.raises(NumsnetError, match="No slice is annotated"):
        annotated_slices(labels, recorded=[])
    with pytest.raises(NumsnetError, match=r"\[-1, 6\]"):
        annotated_slices(labels, recorded=[6, 2, -1])
