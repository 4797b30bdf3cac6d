"""k-means pseudo-labels of a CT stack (DRSegUNet thesis, section 4.4.1).

1. window the stack to -1000..400 HU, threshold at -170 HU: the air;
2. body and lungs (``lungmask``): the lungs are the air inside the body that looks like
   aerated lung, holes filled;
3. mask the image with the lungs;
4. k-means on the lung intensities; the centres sorted by intensity give the classes
   ``1..k`` (k = 3: 1 normal aerated lung, 2 ground-glass opacity, 3 consolidation and
   vessels), 0 outside the lungs;
5. clean up each class (``cleanup``): opening with a line of length 8 at 50 degrees,
   closing with a disk of radius 6.

The thesis clusters the masked slice, whose zeroed background becomes one of its three
clusters (background, lung, ground-glass). Here only lung voxels are clustered, so all k
clusters describe lung tissue and the background is class 0 by construction; ``k = 2``
gives the thesis' three channels (background, lung, ground-glass).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.cluster import KMeans

from ..errors import NumsnetError
from .cleanup import clean_labels
from .lungmask import check_stack, find_lungs, no_lung_error
from .records import KMeansConfig, PseudoLabelResult

N_INIT = 4
"""k-means restarts (the run with the lowest inertia is kept)."""
MAX_SAMPLES = 200_000
"""k-means is fitted on at most this many lung voxels (a seeded random subset)."""


def cluster_intensities(values: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Sorted k-means centres of 1D intensities.

    Parameters
    ----------
    values
        ``(N,)`` intensities.
    k
        Number of clusters.
    seed
        Random state of k-means and of the subsample.

    Returns
    -------
    np.ndarray
        ``(k,) float64`` centres in increasing order.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size > MAX_SAMPLES:
        values = np.random.default_rng(seed).choice(values, MAX_SAMPLES, replace=False)
    distinct = np.unique(values).size
    if distinct < k:
        raise NumsnetError(
            f"The region to cluster has {distinct} distinct intensities, fewer than k = {k}.",
            f"Use k <= {distinct}, or a larger region.",
        )
    model = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(values[:, None])
    return np.sort(model.cluster_centers_.ravel())


def assign_clusters(values: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Class ``1..k`` of each value: its nearest of the sorted ``centers``."""
    edges = (centers[1:] + centers[:-1]) / 2.0
    return (np.searchsorted(edges, values, side="right") + 1).astype(np.uint8)


def kmeans_pseudolabels(
    stack: np.ndarray, config: KMeansConfig | None = None, mask: np.ndarray | None = None
) -> PseudoLabelResult:
    """Pseudo-labels of a stack by k-means inside the lungs (thesis section 4.4.1).

    Parameters
    ----------
    stack
        ``(Z, H, W)`` CT in HU. Data that is not in HU (MRI, 8-bit slices, min-max scaled)
        is detected, said in ``notes`` and with a warning, and handled with percentiles.
    config
        Pipeline settings; ``None`` for the thesis' values.
    mask
        ``(Z, H, W) bool`` region to cluster instead of the lungs found (e.g. slices
        already cropped to the lungs); the lung search is then skipped.

    Returns
    -------
    PseudoLabelResult
        The labels (0 outside the region, ``1..k`` inside in increasing intensity) and
        every step before them.

    Raises
    ------
    NumsnetError
        Not a 3D stack, NaN, constant image, a mask of another shape or empty, fewer
        distinct intensities than k, or no lung found.
    """
    config = config or KMeansConfig()
    arr = check_stack(stack)
    search = find_lungs(arr, config)
    notes = list(search.notes)
    if not search.hounsfield:
        warnings.warn(notes[0], UserWarning, stacklevel=2)
    if mask is not None:
        region = np.asarray(mask)
        if region.shape != arr.shape:
            raise NumsnetError(
                f"The mask has shape {region.shape}, the stack {arr.shape}.",
                "Pass a mask of the stack's shape (Z, H, W).",
            )
        region = region.astype(bool)
        if not region.any():
            raise NumsnetError("The mask is empty.", "Mark the region to cluster in the mask.")
        notes = [n for n in notes if not n.startswith("Lung search")]
        notes.append(f"Clustered the given mask ({int(region.sum())} voxels), not a lung search.")
    elif search.lung.any():
        region = search.lung
    else:
        raise no_lung_error()
    values = search.windowed[region]
    centers = cluster_intensities(values, config.k, config.seed)
    raw = np.zeros(arr.shape, dtype=np.uint8)
    raw[region] = assign_clusters(values, centers)
    labels = clean_labels(raw, region, config)
    notes.append(
        "k-means centres (classes 1.."
        f"{config.k}, darkest first): " + ", ".join(f"{c:.4g}" for c in centers) + "."
    )
    return PseudoLabelResult(
        labels=labels,
        lung_mask=region,
        body_mask=search.body,
        air_mask=search.air,
        centers=centers.astype(float),
        hounsfield=search.hounsfield,
        notes=notes,
        raw_labels=raw,
        windowed=search.windowed,
        window=search.window,
        threshold=search.threshold,
    )
