"""Training stacks, ordered and shuffled batches, label checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet.data import TrainingStack, count_batches, iter_batches, validate_pair
from napari_numsnet.errors import NumsnetError

S = 8


def _stack(n: int, first: int, name: str) -> TrainingStack:
    # Every slice is filled with its own source index, so batches can be traced back.
    index = np.arange(first, first + 2 * n, 2)
    images = np.broadcast_to(index[:, None, None], (n, S, S)).astype(np.float32)
    labels = np.broadcast_to(index[:, None, None] % 3, (n, S, S)).astype(np.int64)
    return TrainingStack(images=images, labels=labels, slice_index=index, name=name)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_ordered_batches_follow_each_stack_in_order():
    stacks = [_stack(5, 0, "a"), _stack(3, 100, "b"), _stack(4, 200, "c")]
    batches = list(iter_batches(stacks, batch_size=2, ordered=True, generator=_gen()))
    assert len(batches) == count_batches(stacks, 2, ordered=True) == 3 + 2 + 2
    seen_order = []
    for k, batch in enumerate(batches):
        assert batch.images.shape[1:] == (1, S, S) and batch.images.dtype == torch.float32
        assert batch.labels.dtype == torch.long
        assert batch.labels.shape == (batch.images.shape[0], S, S)
        values = batch.images[:, 0, 0, 0].tolist()
        stack = stacks[batch.stack]
        new_stack = k == 0 or batches[k - 1].stack != batch.stack
        assert batch.continues == (not new_stack)
        if new_stack:
            seen_order.append(batch.stack)
            expected_start = 0
        assert values == stack.slice_index[expected_start : expected_start + 2].tolist()
        torch.testing.assert_close(
            batch.labels[:, 0, 0], torch.tensor(values, dtype=torch.long) % 3
        )
        expected_start += len(values)
    assert sorted(seen_order) == [0, 1, 2]  # each stack once, in one run
    assert [b.images.shape[0] for b in batches if b.stack == 0] == [2, 2, 1]


def test_ordered_stack_order_is_random_but_seeded():
    stacks = [_stack(1, 10 * i, str(i)) for i in range(8)]

    def order(seed):
        return [b.stack for b in iter_batches(stacks, 4, True, _gen(seed))]

    assert order(1) == order(1)
    assert sorted(order(1)) == list(range(8))
    assert any(order(seed) != list(range(8)) for seed in range(3))


def test_shuffled_batches_cover_all_slices_once():
    stacks = [_stack(5, 0, "a"), _stack(4, 101, "b")]
    batches = list(iter_batches(stacks, batch_size=4, ordered=False, generator=_gen(2)))
    assert len(batches) == count_batches(stacks, 4, ordered=False) == 3
    assert [b.images.shape[0] for b in batches] == [4, 4, 1]
    assert all(b.stack == -1 and not b.continues for b in batches)
    values = torch.cat([b.images[:, 0, 0, 0] for b in batches]).tolist()
    assert sorted(values) == sorted([0, 2, 4, 6, 8, 101, 103, 105, 107])
    assert values != sorted(values)  # shuffled
    again = torch.cat([b.images[:, 0, 0, 0] for b in iter_batches(stacks, 4, False, _gen(2))])
    assert again.tolist() == values


def test_batch_errors():
    with pytest.raises(NumsnetError, match="no stack"):
        list(iter_batches([], 2, True, _gen()))
    with pytest.raises(NumsnetError, match="below 1"):
        count_batches([_stack(2, 0, "a")], 0, True)
    empty = TrainingStack(
        np.zeros((0, S, S)), np.zeros((0, S, S)), np.zeros(0, dtype=int), name="empty"
    )
    with pytest.raises(NumsnetError, match="'empty' has no annotated slice"):
        list(iter_batches([_stack(2, 0, "a"), empty], 2, False, _gen()))


def test_training_stack_checks():
    with pytest.raises(NumsnetError, match="do not fit"):
        TrainingStack(np.zeros((2, S, S)), np.zeros((3, S, S)), np.arange(2))
    with pytest.raises(NumsnetError, match="ascending"):
        TrainingStack(np.zeros((2, S, S)), np.zeros((2, S, S)), np.array([4, 1]))


def test_validate_pair_accepts_good_labels():
    image = np.zeros((2, 4, 4))
    labels = np.zeros((2, 4, 4), dtype=np.uint8)
    labels[0, 0, 0] = 2
    validate_pair(image, labels, num_classes=3, exclusive=True)
    validate_pair(image, labels, num_classes=2, exclusive=False)
    validate_pair(image, labels.astype(np.float32), num_classes=3, exclusive=True)


def test_validate_pair_shape_mismatch_names_both():
    with pytest.raises(NumsnetError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
        validate_pair(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), np.uint8), 3, True)


def test_validate_pair_values_above_range():
    labels = np.zeros((1, 4, 4), dtype=np.int64)
    labels[0, 0, :2] = [3, 7]
    with pytest.raises(NumsnetError, match=r"\[3, 7\].*0\.\.2") as info:
        validate_pair(np.zeros((1, 4, 4)), labels, num_classes=3, exclusive=True)
    assert "num_classes to 8" in info.value.fix and "relabel" in info.value.fix
    with pytest.raises(NumsnetError, match=r"\[7\].*0\.\.3") as info:
        validate_pair(np.zeros((1, 4, 4)), labels, num_classes=3, exclusive=False)
    assert "num_classes to 7" in info.value.fix


def test_validate_pair_negative_and_fractional():
    labels = np.zeros((1, 4, 4), dtype=np.int16)
    labels[0, 1, 1] = -1
    with pytest.raises(NumsnetError, match="negative"):
        validate_pair(np.zeros((1, 4, 4)), labels, 3, True)
    with pytest.raises(NumsnetError, match="non-integer"):
        validate_pair(np.zeros((1, 4, 4)), np.full((1, 4, 4), 0.5), 3, True)
