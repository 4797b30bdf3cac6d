"""Post-processing of a predicted label stack: the largest connected component per class.

A slice model predicts every slice on its own, so a class may get small islands far from
the organ (a "left ventricle" on a slice below the heart). nnU-Net removes all but the
largest 3D connected component of a class when that raises the validation Dice, and
keeps the class as predicted otherwise; a class made of several organs (both kidneys,
both lungs) must keep its components. :func:`keep_largest_component` does the removal
for chosen classes; :func:`choose_largest_component` makes nnU-Net's choice from the
validation slices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


def keep_largest_component(labels: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """Keep only the largest connected component of each label value in ``values``.

    Parameters
    ----------
    labels
        ``(Z, H, W)`` (or any dimension) integer label map.
    values
        Label values to clean; other values are left as they are. Background (0) is
        never a candidate.

    Returns
    -------
    np.ndarray
        A new label map, same shape and dtype: the voxels of the smaller components of
        each cleaned value set to 0 (background). Connectivity: faces, edges and corners
        (26 neighbours in 3D), as MONAI's ``KeepLargestConnectedComponent`` by default.
    """
    out = np.array(labels, copy=True)
    structure = ndi.generate_binary_structure(labels.ndim, labels.ndim)
    for value in sorted({int(v) for v in values} - {0}):
        mask = labels == value
        components, count = ndi.label(mask, structure=structure)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())[1:]
        out[mask & (components != 1 + int(np.argmax(sizes)))] = 0
    return out


@dataclass(frozen=True)
class ComponentChoice:
    """The classes whose largest component alone is kept, and the Dice behind the choice.

    Attributes
    ----------
    classes
        Label values for which keeping the largest component raised the Dice.
    dice_without, dice_with
        Pooled Dice of every candidate label value on the scored slices, as predicted
        and with its largest component alone.
    """

    classes: tuple[int, ...]
    dice_without: dict[int, float]
    dice_with: dict[int, float]


def _pooled_dice(
    predicted: Sequence[np.ndarray], reference: Sequence[np.ndarray], value: int
) -> float:
    tp = fp = fn = 0
    for p, r in zip(predicted, reference, strict=True):
        a, b = p == value, r == value
        tp += int(np.count_nonzero(a & b))
        fp += int(np.count_nonzero(a & ~b))
        fn += int(np.count_nonzero(~a & b))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def choose_largest_component(
    predicted: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    scored: Sequence[np.ndarray],
    num_values: int,
) -> ComponentChoice:
    """For each class, keep only its largest component if that raises the validation Dice.

    Parameters
    ----------
    predicted
        One ``(Z, H, W)`` integer label map per validation stack, the whole stack as
        predicted (components are 3D).
    reference
        The reference label maps, same shapes; read on the scored slices only.
    scored
        One ``(Z,)`` bool mask per stack: the slices that count.
    num_values
        Label values ``0 .. num_values - 1`` (background 0 is never a candidate).

    Returns
    -------
    ComponentChoice
        A class is chosen when its pooled Dice over the scored slices is strictly higher
        with its largest component alone than as predicted (nnU-Net decides so on its
        cross-validation); classes neither predicted nor present there are not chosen.
    """
    raw = [p[m] for p, m in zip(predicted, scored, strict=True)]
    ref = [r[m] for r, m in zip(reference, scored, strict=True)]
    chosen, without, with_ = [], {}, {}
    for value in range(1, num_values):
        before = _pooled_dice(raw, ref, value)
        if np.isnan(before):
            continue
        cleaned = [
            keep_largest_component(p, [value])[m] for p, m in zip(predicted, scored, strict=True)
        ]
        after = _pooled_dice(cleaned, ref, value)
        without[value], with_[value] = before, after
        if after > before:
            chosen.append(value)
    return ComponentChoice(tuple(chosen), without, with_)
