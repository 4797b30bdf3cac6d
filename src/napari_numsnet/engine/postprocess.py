"""Post-processing of a predicted label stack: the largest connected component per class.

A slice model predicts every slice on its own, so a class may get small islands far from
the organ (a "left ventricle" on a slice below the heart). nnU-Net removes all but the
largest 3D connected component of a class when that raises the validation Dice, and
keeps the class as predicted otherwise; a class made of several organs (both kidneys,
both lungs) must keep its components. :func:`keep_largest_component` does the removal
for chosen classes.
"""

from __future__ import annotations

from collections.abc import Iterable

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
