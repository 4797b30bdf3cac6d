"""Steps 1-2 of the k-means pseudo-labels: window, air threshold, body and lungs.

The thesis (DRSegUNet, 4.4.1) keeps "the two largest blobs" of the thresholded slice. On a
stack that holds the lung bases and the upper abdomen, the largest air regions are bowel
and stomach gas, so the lungs are searched for with what a chest CT implies:

- the body is the largest non-air region of each slice, holes filled; air outside it
  (around the patient, between patient and table) is never lung;
- candidates are the 3D connected components (face connectivity) of the air inside the
  body, so a lung is one object across slices and a slice without lung gets none;
- a gas pocket is pure air while aerated lung is tissue and air (about -850 HU): a
  candidate is rejected when more than ``max_gas_fraction`` of its interior voxels (one
  pixel in from its edge in each slice, away from partial volume) are below -950 HU, the
  usual level of pure air in the lung (the emphysema index LAA-950);
- a candidate smaller than ``min_lung_fraction`` of the body's voxels is noise;
- the two largest candidates left are the lungs; the second is kept only when it is at
  least ``PAIR_RATIO`` of the first (the two lungs have similar volumes), so one
  component (lungs joined through the trachea, or one lung) is also a valid answer;
- each lung keeps the vessels and opacities inside it: holes are filled slice by slice,
  for each lung on its own so that the mediastinum between them is never filled.

The position of a candidate (anterior, central) is not used: the stack's orientation is not
known here, and bowel gas lies as lateral as the lungs do.

Data that is not in HU (MRI, 8-bit slices, min-max scaled stacks) gets the same steps with
levels taken from the data: window at the 1st..99th percentiles, air threshold by Otsu's
method, and "pure air" at 5 % of the way from the air around the body to the median body
tissue (the same place as -950 HU on a CT: -1000 + 0.05 * 1040).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from ..data.hounsfield import looks_like_hounsfield
from ..errors import NumsnetError
from .records import KMeansConfig

GAS_HU = -950.0
"""Pure air in HU: interior voxels below it count as gas, not lung tissue."""
PAIR_RATIO = 0.1
"""The second lung is kept only when at least this fraction of the first one's size."""
PERCENTILE_WINDOW = (1.0, 99.0)
"""Window of data that is not in HU, in percentiles."""
GAS_STEP = 0.05
"""Pure air of data not in HU: this fraction of the way from outside air to body tissue."""
_MIN_CORE = 20
_CROSS = ndi.generate_binary_structure(2, 1)[None]  # in-plane 4-neighbourhood, (1, 3, 3)


@dataclass
class LungSearch:
    """Steps 1-2 with the levels they used (see ``find_lungs``)."""

    lung: np.ndarray
    body: np.ndarray
    air: np.ndarray
    windowed: np.ndarray
    window: tuple[float, float]
    threshold: float
    hounsfield: bool
    notes: list[str] = field(default_factory=list)


def check_stack(stack: np.ndarray) -> np.ndarray:
    """Check a ``(Z, H, W)`` stack and return it as float32; raise ``NumsnetError`` if bad."""
    arr = np.asarray(stack)
    if arr.ndim == 2:
        raise NumsnetError(
            f"Got a single 2D slice of shape {arr.shape}; pseudo-labels need a (Z, H, W) stack.",
            "Pass the slice as a stack of one: stack[None].",
        )
    if arr.ndim != 3:
        raise NumsnetError(
            f"Got an array of shape {arr.shape}; pseudo-labels need a (Z, H, W) stack.",
            "Pass one channel of one volume, slices along the first axis.",
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise NumsnetError(f"The stack has dtype {arr.dtype}.", "Pass real numbers.")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise NumsnetError(
            "The stack contains NaN or infinite values.",
            "Replace them first, e.g. np.nan_to_num(stack, nan=stack_min) with the air value.",
        )
    if arr.size == 0 or arr.min() == arr.max():
        raise NumsnetError(
            "The stack is empty or has one value everywhere; there is nothing to cluster.",
            "Check that the right volume was loaded.",
        )
    return arr


def intensity_levels(
    stack: np.ndarray, config: KMeansConfig, hounsfield: bool
) -> tuple[tuple[float, float], float]:
    """Step 1 levels: the window and the air threshold, in the units of ``stack``.

    HU data uses ``config.window`` and ``config.air_threshold``; other data the 1st..99th
    percentiles and Otsu's threshold of the windowed values.
    """
    if hounsfield:
        return (float(config.window[0]), float(config.window[1])), float(config.air_threshold)
    low, high = (float(v) for v in np.percentile(stack, PERCENTILE_WINDOW))
    if low == high:
        low, high = float(stack.min()), float(stack.max())
    return (low, high), float(threshold_otsu(np.clip(stack, low, high)))


def body_mask(air: np.ndarray) -> np.ndarray:
    """``(Z, H, W) bool`` largest non-air region of each slice, holes filled."""
    body = np.zeros_like(air, dtype=bool)
    for z, slice_air in enumerate(air):
        lab, n = ndi.label(~slice_air)
        if n:
            sizes = np.bincount(lab.ravel())[1:]
            body[z] = ndi.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))
    return body


def _gas_level(windowed: np.ndarray, air: np.ndarray, body: np.ndarray, hounsfield: bool):
    """Intensity of pure air, or None when it cannot be told (no air around the body)."""
    if hounsfield:
        return GAS_HU
    outside, tissue = air & ~body, body & ~air
    if not outside.any() or not tissue.any():
        return None
    air_level, tissue_level = np.median(windowed[outside]), np.median(windowed[tissue])
    return float(air_level + GAS_STEP * (tissue_level - air_level))


def select_lungs(
    windowed: np.ndarray, air: np.ndarray, body: np.ndarray, config: KMeansConfig, gas_level
) -> tuple[np.ndarray, list[str]]:
    """Step 2: the lungs among the air inside the body (rules in the module docstring).

    Returns the ``(Z, H, W) bool`` lungs, holes filled, and notes on what was kept; the
    lungs are empty when no candidate passes.
    """
    lab, n = ndi.label(air & body)
    sizes = np.bincount(lab.ravel(), minlength=n + 1).astype(float)
    core = ndi.binary_erosion(lab > 0, structure=_CROSS)
    core_sizes = np.bincount(lab[core], minlength=n + 1).astype(float)
    use_core = core_sizes >= _MIN_CORE
    if gas_level is None:
        gas = np.zeros(n + 1)
    else:
        dark = windowed < gas_level
        gas_all = np.bincount(lab[dark], minlength=n + 1) / np.maximum(sizes, 1)
        gas_core = np.bincount(lab[core & dark], minlength=n + 1) / np.maximum(core_sizes, 1)
        gas = np.where(use_core, gas_core, gas_all)
    min_size = max(config.min_lung_fraction * float(body.sum()), 1.0)
    ids = np.arange(1, n + 1)
    big = sizes[1:] >= min_size
    lung_like = gas[1:] <= config.max_gas_fraction
    keep = ids[big & lung_like]
    keep = keep[np.argsort(-sizes[keep], kind="stable")][:2]
    if len(keep) == 2 and sizes[keep[1]] < PAIR_RATIO * sizes[keep[0]]:
        keep = keep[:1]
    notes = [
        f"Lung search: {n} air regions inside the body; {int((~big).sum())} smaller than "
        f"{min_size:.0f} voxels, {int((big & ~lung_like).sum())} rejected as gas (more than "
        f"{config.max_gas_fraction:.0%} of the interior below the pure-air level); kept "
        f"{len(keep)} lung component(s) of "
        + (", ".join(f"{int(sizes[i])}" for i in keep) or "no")
        + " voxels."
    ]
    lung = np.zeros_like(air, dtype=bool)
    for i in keep:
        component = lab == i
        for z in np.flatnonzero(component.any(axis=(1, 2))):
            lung[z] |= ndi.binary_fill_holes(component[z])
    return lung, notes


def find_lungs(stack: np.ndarray, config: KMeansConfig | None = None) -> LungSearch:
    """Steps 1-2 on a checked stack, with the levels used and notes; lungs may be empty."""
    config = config or KMeansConfig()
    arr = check_stack(stack)
    hounsfield = looks_like_hounsfield(arr)
    window, threshold = intensity_levels(arr, config, hounsfield)
    windowed = np.clip(arr, *window).astype(np.float32)
    air = windowed < threshold
    body = body_mask(air)
    notes = []
    if not hounsfield:
        notes.append(
            f"The values ({arr.min():.4g}..{arr.max():.4g}) do not look like Hounsfield "
            f"units: window at the 1st..99th percentiles ({window[0]:.4g}..{window[1]:.4g}) "
            f"and air threshold by Otsu's method ({threshold:.4g}) instead of HU levels."
        )
    gas_level = _gas_level(windowed, air, body, hounsfield)
    if gas_level is None:
        notes.append("No air around the body: gas pockets cannot be told from lungs.")
    lung, lung_notes = select_lungs(windowed, air, body, config, gas_level)
    return LungSearch(lung, body, air, windowed, window, threshold, hounsfield, notes + lung_notes)


def no_lung_error() -> NumsnetError:
    """The error for a stack where no lung was found."""
    return NumsnetError(
        "No lungs were found: no air region inside the body looks like aerated lung.",
        "The stack may not contain lungs (abdomen, brain, heart MRI, ...). Pass your own "
        "region with mask=..., e.g. a lung mask, or np.ones(stack.shape, bool) for all of it.",
    )


def lung_mask(
    stack_hu: np.ndarray, config: KMeansConfig | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lungs, body and air of a CT stack (steps 1-2 of the thesis' pseudo-labels).

    Parameters
    ----------
    stack_hu
        ``(Z, H, W)`` CT in HU. Other data is accepted with a warning (percentile levels).
    config
        Window, air threshold and lung tests; ``None`` for the thesis' values.

    Returns
    -------
    lung, body, air
        ``(Z, H, W) bool`` each: the lungs (holes filled), the body (largest non-air region
        of each slice, holes filled), the air (below the threshold).

    Raises
    ------
    NumsnetError
        Bad stack (not 3D, NaN, constant), or no lung found.
    """
    search = find_lungs(stack_hu, config)
    if not search.hounsfield:
        warnings.warn(search.notes[0], UserWarning, stacklevel=2)
    if not search.lung.any():
        raise no_lung_error()
    return search.lung, search.body, search.air
