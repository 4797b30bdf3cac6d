"""Per-class segmentation metrics on integer label maps: Dice, IoU, precision, recall.

Each metric exists as a plain function of a predicted and a reference label map and
through the accumulating :class:`SegmentationMetrics`, which sums true positives, false
positives and false negatives over many updates and computes the metrics once from the
totals (global, not averaged per batch).

Results are arrays of shape ``(K,)`` indexed by label value, ``K = num_classes`` label
values including the background 0. For an exclusive model ``K`` is its number of output
channels; for a model of ``C`` independent planes ``K = C + 1``
(see :func:`num_label_values`). With ``ignore_background=True`` entry 0 is NaN.

Conventions: a class absent from both maps gets NaN for every metric, so that it drops
out of ``np.nanmean``. Otherwise a zero denominator gives 0: a class predicted but absent
from the reference has Dice, IoU, precision and recall 0, and a class present in the
reference but never predicted has all four 0 as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from napari_numsnet.errors import NumsnetError

ArrayLike = np.ndarray | torch.Tensor
METRIC_NAMES = ("dice", "iou", "precision", "recall")


def num_label_values(num_classes: int, exclusive: bool) -> int:
    """Number of label values ``K`` (background included) of a model's output channels."""
    return num_classes if exclusive else num_classes + 1


def _keep_mask(mask: ArrayLike | None, shape: tuple[int, ...]) -> ArrayLike | None:
    """Broadcast a pixel mask (same shape) or a leading-axis mask, e.g. ``(Z,)`` slices."""
    if mask is None:
        return None
    mshape = tuple(mask.shape)
    if mshape != shape[: len(mshape)]:
        raise NumsnetError(
            f"Mask of shape {mshape} does not match label maps of shape {shape}.",
            "Pass a mask of the label map's shape, or one flag per slice of its first axis.",
        )
    mask = mask.reshape(mshape + (1,) * (len(shape) - len(mshape)))
    if isinstance(mask, torch.Tensor):
        return (mask != 0).expand(shape).reshape(-1)
    return np.broadcast_to(mask != 0, shape).reshape(-1)


def confusion_counts(
    pred: ArrayLike, ref: ArrayLike, num_classes: int, mask: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives per label value.

    Parameters
    ----------
    pred, ref
        Predicted and reference integer label maps of the same shape, e.g. ``(Z, H, W)``,
        numpy arrays or torch tensors (counted on their device).
    num_classes
        Number of label values ``K``; values must lie in ``[0, K)``.
    mask
        Optional: nonzero where a pixel counts, of the maps' shape, or of their leading
        axes (``(Z,)`` selects whole slices).

    Returns
    -------
    tp, fp, fn
        ``(K,)`` int64 each, indexed by label value (background included).
    """
    if tuple(pred.shape) != tuple(ref.shape):
        raise NumsnetError(
            f"Predicted labels of shape {tuple(pred.shape)} do not match reference labels "
            f"of shape {tuple(ref.shape)}.",
            "Compare label maps of the same shape (resize the prediction back first).",
        )
    if num_classes < 1:
        raise NumsnetError(
            f"num_classes must be at least 1, got {num_classes}.",
            "Pass the number of label values, background included.",
        )
    is_torch = isinstance(pred, torch.Tensor) or isinstance(ref, torch.Tensor)
    if is_torch:
        device = pred.device if isinstance(pred, torch.Tensor) else ref.device
        p: ArrayLike = torch.as_tensor(pred, device=device).reshape(-1).long()
        r: ArrayLike = torch.as_tensor(ref, device=device).reshape(-1).long()
        keep = _keep_mask(
            None if mask is None else torch.as_tensor(mask, device=device), tuple(pred.shape)
        )
    else:
        p = np.asarray(pred).reshape(-1).astype(np.int64)
        r = np.asarray(ref).reshape(-1).astype(np.int64)
        keep = _keep_mask(None if mask is None else np.asarray(mask), tuple(pred.shape))
    if keep is not None:
        p, r = p[keep], r[keep]
    for name, values in (("Predicted", p), ("Reference", r)):
        if values.shape[0] and (int(values.min()) < 0 or int(values.max()) >= num_classes):
            raise NumsnetError(
                f"{name} labels span {int(values.min())}..{int(values.max())}, outside "
                f"0..{num_classes - 1} for num_classes={num_classes}.",
                "Pass num_classes = the number of label values, background included.",
            )
    flat = r * num_classes + p
    if is_torch:
        matrix = torch.bincount(flat, minlength=num_classes**2).cpu().numpy()
    else:
        matrix = np.bincount(flat, minlength=num_classes**2)
    matrix = matrix.reshape(num_classes, num_classes).astype(np.int64)  # [ref, pred]
    tp = np.diag(matrix).copy()
    return tp, matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp


def metrics_from_counts(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, ignore_background: bool = True
) -> dict[str, np.ndarray]:
    """Dice, IoU, precision and recall from ``(K,)`` counts, with the module's conventions.

    Returns
    -------
    dict
        ``dice``, ``iou``, ``precision``, ``recall``: ``(K,)`` float64 each.
    """
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    absent = (tp + fp + fn) == 0

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        out[absent] = np.nan
        if ignore_background and out.shape[0]:
            out[0] = np.nan
        return out

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
    }


def _metric(
    name: str, pred: ArrayLike, ref: ArrayLike, num_classes: int, ignore_background: bool
) -> np.ndarray:
    counts = confusion_counts(pred, ref, num_classes)
    return metrics_from_counts(*counts, ignore_background=ignore_background)[name]


def dice_per_class(
    pred: ArrayLike, ref: ArrayLike, num_classes: int, ignore_background: bool = True
) -> np.ndarray:
    """Dice ``2 TP / (2 TP + FP + FN)`` per label value: ``(K,)`` float64."""
    return _metric("dice", pred, ref, num_classes, ignore_background)


def iou_per_class(
    pred: ArrayLike, ref: ArrayLike, num_classes: int, ignore_background: bool = True
) -> np.ndarray:
    """Intersection over union ``TP / (TP + FP + FN)`` per label value: ``(K,)`` float64."""
    return _metric("iou", pred, ref, num_classes, ignore_background)


def precision_per_class(
    pred: ArrayLike, ref: ArrayLike, num_classes: int, ignore_background: bool = True
) -> np.ndarray:
    """Precision ``TP / (TP + FP)`` per label value: ``(K,)`` float64."""
    return _metric("precision", pred, ref, num_classes, ignore_background)


def recall_per_class(
    pred: ArrayLike, ref: ArrayLike, num_classes: int, ignore_background: bool = True
) -> np.ndarray:
    """Recall ``TP / (TP + FN)`` per label value: ``(K,)`` float64."""
    return _metric("recall", pred, ref, num_classes, ignore_background)


class SegmentationMetrics:
    """Accumulate per-class counts over updates; compute global metrics from the totals.

    Parameters
    ----------
    num_classes
        Number of label values ``K``, background included.
    class_names
        Name per label value: a sequence of length ``K`` (index 0 the background) or a
        mapping ``{value: name}``; missing names become ``class_<value>``.
    ignore_background
        Report label value 0 as NaN and leave it out of :meth:`summary`.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        ignore_background: bool = True,
    ) -> None:
        if num_classes < 1:
            raise NumsnetError(
                f"num_classes must be at least 1, got {num_classes}.",
                "Pass the number of label values, background included.",
            )
        if class_names is None:
            names: Mapping[int, str] = {0: "background"}
        elif isinstance(class_names, Mapping):
            names = class_names
        else:
            if len(class_names) != num_classes:
                raise NumsnetError(
                    f"{len(class_names)} class names given for {num_classes} label values.",
                    "Give one name per label value, the background first.",
                )
            names = dict(enumerate(class_names))
        self.num_classes = num_classes
        self.class_names = [names.get(k, f"class_{k}") for k in range(num_classes)]
        self.ignore_background = ignore_background
        self.reset()

    def reset(self) -> None:
        """Forget all counts."""
        self.tp = np.zeros(self.num_classes, dtype=np.int64)
        self.fp = np.zeros(self.num_classes, dtype=np.int64)
        self.fn = np.zeros(self.num_classes, dtype=np.int64)

    def update(self, pred: ArrayLike, ref: ArrayLike, mask: ArrayLike | None = None) -> None:
        """Add the counts of one predicted/reference pair (see :func:`confusion_counts`)."""
        tp, fp, fn = confusion_counts(pred, ref, self.num_classes, mask=mask)
        self.tp += tp
        self.fp += fp
        self.fn += fn

    def compute(self) -> dict[str, np.ndarray]:
        """``dice``, ``iou``, ``precision``, ``recall``: ``(K,)`` float64 each."""
        return metrics_from_counts(self.tp, self.fp, self.fn, self.ignore_background)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{class name: {metric: value}}`` for the reported classes."""
        values = self.compute()
        first = 1 if self.ignore_background else 0
        return {
            self.class_names[k]: {m: float(values[m][k]) for m in METRIC_NAMES}
            for k in range(first, self.num_classes)
        }

    def mean(self) -> dict[str, float]:
        """``{metric: NaN-mean over the reported classes}`` (NaN if no class is present)."""
        values = self.compute()
        out = {}
        for m in METRIC_NAMES:
            finite = values[m][~np.isnan(values[m])]
            out[m] = float(finite.mean()) if finite.size else float("nan")
        return out
