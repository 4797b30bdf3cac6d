"""Metrics: hand-computed counts and scores, NaN conventions, accumulation, masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet.engine.metrics import (
    SegmentationMetrics,
    confusion_counts,
    dice_per_class,
    iou_per_class,
    num_label_values,
    precision_per_class,
    recall_per_class,
)
from napari_numsnet.errors import NumsnetError

NAN = np.nan

# Spec example, K = 3 label values.
PRED = np.array([[1, 1, 0], [0, 2, 2]])
REF = np.array([[1, 0, 0], [0, 2, 0]])
# value 0: predicted at (0,2), (1,0); reference at (0,1), (0,2), (1,0), (1,2)
#          tp = 2 [(0,2), (1,0)], fp = 0, fn = 2 [(0,1), (1,2)]
# value 1: predicted at (0,0), (0,1); reference at (0,0) -> tp = 1, fp = 1, fn = 0
# value 2: predicted at (1,1), (1,2); reference at (1,1) -> tp = 1, fp = 1, fn = 0

# Second example, K = 5 label values, classes behave differently.
PRED2 = np.array([[1, 0, 0], [2, 1, 3], [0, 0, 0]])
REF2 = np.array([[1, 1, 0], [2, 2, 2], [0, 0, 0]])
# value 0: predicted at (0,1), (0,2), row 2 (5 px); reference at (0,2), row 2 (4 px)
#          tp = 4, fp = 1 [(0,1)], fn = 0
# value 1: predicted at (0,0), (1,1); reference at (0,0), (0,1) -> tp = 1, fp = 1, fn = 1
# value 2: predicted at (1,0); reference at (1,0), (1,1), (1,2) -> tp = 1, fp = 0, fn = 2
# value 3: predicted at (1,2); no reference -> tp = 0, fp = 1, fn = 0
# value 4: absent from both -> tp = fp = fn = 0


def test_confusion_counts_by_hand():
    tp, fp, fn = confusion_counts(PRED, REF, 3)
    assert tp.tolist() == [2, 1, 1]
    assert fp.tolist() == [0, 1, 1]
    assert fn.tolist() == [2, 0, 0]
    tp, fp, fn = confusion_counts(PRED2, REF2, 5)
    assert tp.tolist() == [4, 1, 1, 0, 0]
    assert fp.tolist() == [1, 1, 0, 1, 0]
    assert fn.tolist() == [0, 1, 2, 0, 0]


def test_metrics_spec_example_by_hand():
    # value 1 and 2: dice = 2*1 / (2*1 + 1 + 0) = 2/3, iou = 1 / (1 + 1 + 0) = 1/2,
    # precision = 1 / (1 + 1) = 1/2, recall = 1 / (1 + 0) = 1
    np.testing.assert_allclose(dice_per_class(PRED, REF, 3), [NAN, 2 / 3, 2 / 3])
    np.testing.assert_allclose(iou_per_class(PRED, REF, 3), [NAN, 0.5, 0.5])
    np.testing.assert_allclose(precision_per_class(PRED, REF, 3), [NAN, 0.5, 0.5])
    np.testing.assert_allclose(recall_per_class(PRED, REF, 3), [NAN, 1.0, 1.0])
    # background kept: dice = 2*2 / (2*2 + 0 + 2) = 2/3, iou = 2/4, precision = 2/2, recall = 2/4
    kw = {"ignore_background": False}
    assert dice_per_class(PRED, REF, 3, **kw)[0] == pytest.approx(2 / 3)
    assert iou_per_class(PRED, REF, 3, **kw)[0] == pytest.approx(0.5)
    assert precision_per_class(PRED, REF, 3, **kw)[0] == pytest.approx(1.0)
    assert recall_per_class(PRED, REF, 3, **kw)[0] == pytest.approx(0.5)


def test_metrics_second_example_and_nan_conventions():
    dice = dice_per_class(PRED2, REF2, 5, ignore_background=False)
    iou = iou_per_class(PRED2, REF2, 5, ignore_background=False)
    precision = precision_per_class(PRED2, REF2, 5, ignore_background=False)
    recall = recall_per_class(PRED2, REF2, 5, ignore_background=False)
    # value 0: dice 8/9, iou 4/5, precision 4/5, recall 4/4
    # value 1: dice 2/4, iou 1/3, precision 1/2, recall 1/2
    # value 2: dice 2/4, iou 1/3, precision 1/1, recall 1/3
    # value 3 (predicted, not in reference): all 0; value 4 (absent from both): all NaN
    np.testing.assert_allclose(dice, [8 / 9, 0.5, 0.5, 0.0, NAN])
    np.testing.assert_allclose(iou, [4 / 5, 1 / 3, 1 / 3, 0.0, NAN])
    np.testing.assert_allclose(precision, [4 / 5, 0.5, 1.0, 0.0, NAN])
    np.testing.assert_allclose(recall, [1.0, 0.5, 1 / 3, 0.0, NAN])
    assert np.nanmean(dice_per_class(PRED2, REF2, 5)) == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def test_class_in_reference_never_predicted_scores_zero():
    pred = np.zeros((2, 2), dtype=np.int64)
    ref = np.array([[1, 0], [0, 0]])
    for fn in (dice_per_class, iou_per_class, precision_per_class, recall_per_class):
        np.testing.assert_allclose(fn(pred, ref, 2), [NAN, 0.0])


def test_torch_input_matches_numpy():
    counts_np = confusion_counts(PRED2, REF2, 5)
    counts_torch = confusion_counts(torch.from_numpy(PRED2), torch.from_numpy(REF2), 5)
    mixed = confusion_counts(torch.from_numpy(PRED2).int(), REF2.astype(np.uint8), 5)
    for a, b, c in zip(counts_np, counts_torch, mixed, strict=True):
        assert isinstance(b, np.ndarray)
        assert a.tolist() == b.tolist() == c.tolist()


def test_accumulation_equals_one_update_on_concatenation():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, size=(6, 7, 5))
    ref = rng.integers(0, 4, size=(6, 7, 5))
    acc = SegmentationMetrics(4)
    acc.update(pred[:2], ref[:2])
    acc.update(torch.from_numpy(pred[2:]), torch.from_numpy(ref[2:]))
    once = SegmentationMetrics(4)
    once.update(pred, ref)
    for key, values in once.compute().items():
        np.testing.assert_array_equal(acc.compute()[key], values)
    # same as the plain function on the whole stack
    np.testing.assert_allclose(acc.compute()["dice"], dice_per_class(pred, ref, 4))


def test_accumulated_metrics_are_global_not_per_batch_averages():
    acc = SegmentationMetrics(2, ignore_background=False)
    acc.update(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))  # value 1: tp 4
    acc.update(np.array([[1, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))  # value 1: fp 1
    # value 1: tp = 4, fp = 1, fn = 0 -> dice 8/9 (the average of per-batch Dice is 1/2)
    # value 0: tp = 3, fp = 0, fn = 1 -> dice 6/7
    np.testing.assert_allclose(acc.compute()["dice"], [6 / 7, 8 / 9])


def test_reset_forgets_counts():
    acc = SegmentationMetrics(3)
    acc.update(PRED, REF)
    acc.reset()
    assert np.isnan(acc.compute()["dice"]).all()
    acc.update(PRED, REF)
    np.testing.assert_allclose(acc.compute()["dice"], [NAN, 2 / 3, 2 / 3])


def test_pixel_mask_and_slice_mask():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 3, size=(4, 5, 6))
    ref = rng.integers(0, 3, size=(4, 5, 6))
    pixel_mask = rng.random((4, 5, 6)) > 0.5
    counts = confusion_counts(pred, ref, 3, mask=pixel_mask)
    expected = confusion_counts(pred[pixel_mask], ref[pixel_mask], 3)
    for a, b in zip(counts, expected, strict=True):
        assert a.tolist() == b.tolist()

    slice_mask = np.array([True, False, True, False])
    acc = SegmentationMetrics(3)
    acc.update(torch.from_numpy(pred), torch.from_numpy(ref), mask=torch.from_numpy(slice_mask))
    sub = SegmentationMetrics(3)
    sub.update(pred[[0, 2]], ref[[0, 2]])
    np.testing.assert_array_equal(acc.tp, sub.tp)
    np.testing.assert_array_equal(acc.fp, sub.fp)
    np.testing.assert_array_equal(acc.fn, sub.fn)


def test_masked_pixels_may_hold_any_value():
    pred = np.array([[1, 7], [0, 1]])
    ref = np.array([[1, -1], [0, 0]])
    mask = np.array([[True, False], [True, True]])
    # kept: (0,0) pred 1 ref 1; (1,0) pred 0 ref 0; (1,1) pred 1 ref 0
    # value 0: tp 1, fp 0, fn 1; value 1: tp 1, fp 1, fn 0
    tp, fp, fn = confusion_counts(pred, ref, 2, mask=mask)
    assert tp.tolist() == [1, 1] and fp.tolist() == [0, 1] and fn.tolist() == [1, 0]


def test_summary_by_class_name_and_mean():
    acc = SegmentationMetrics(5, class_names=["background", "liver", "spleen", "kidneys", "x"])
    acc.update(PRED2, REF2)
    summary = acc.summary()
    assert list(summary) == ["liver", "spleen", "kidneys", "x"]
    assert summary["liver"] == pytest.approx(
        {"dice": 0.5, "iou": 1 / 3, "precision": 0.5, "recall": 0.5}
    )
    assert summary["spleen"]["recall"] == pytest.approx(1 / 3)
    assert np.isnan(summary["x"]["dice"])
    mean = acc.mean()
    assert mean["dice"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert mean["precision"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_default_and_mapping_class_names():
    assert SegmentationMetrics(3).class_names == ["background", "class_1", "class_2"]
    names = SegmentationMetrics(3, class_names={0: "bg", 2: "spleen"}).class_names
    assert names == ["bg", "class_1", "spleen"]
    with pytest.raises(NumsnetError, match="2 class names"):
        SegmentationMetrics(3, class_names=["bg", "liver"])


def test_shape_mismatch_says_both_shapes():
    acc = SegmentationMetrics(3)
    with pytest.raises(NumsnetError, match=r"\(2, 3\).*\(3, 2\)"):
        acc.update(np.zeros((2, 3), dtype=int), np.zeros((3, 2), dtype=int))
    with pytest.raises(NumsnetError, match=r"\(3,\)"):
        acc.update(np.zeros((2, 3), dtype=int), np.zeros((2, 3), dtype=int), mask=np.ones(3))


def test_out_of_range_labels_are_refused():
    with pytest.raises(NumsnetError, match=r"0\.\.2"):
        confusion_counts(np.array([0, 3]), np.array([0, 1]), 3)


def test_num_label_values():
    assert num_label_values(4, exclusive=True) == 4
    assert num_label_values(3, exclusive=False) == 4
