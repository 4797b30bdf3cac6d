"""One detector of CT in Hounsfield units, shared by preprocessing, the reader and the
pseudo-labels (they must agree within a run: HU pseudo-labels go with an HU window)."""

from __future__ import annotations

import numpy as np

#: A stack is HU when its smallest finite value is below this (HU): air and lung
#: (-1000 .. -500) are present, even in a CT cropped inside the body (-850 .. 400).
#: Data in [0, 1], [0, 255], z-scores or raw scanner values have nothing this low.
HU_AIR_BELOW = -500.0
#: ... and its largest finite value above this (HU): some soft tissue (about 0 to 100).
HU_TISSUE_ABOVE = -200.0


def looks_like_hounsfield(stack: np.ndarray) -> bool:
    """Whether ``stack`` looks like CT in Hounsfield units.

    Parameters
    ----------
    stack
        Image of any shape (values in HU or anything else); non-finite values are
        ignored.

    Returns
    -------
    bool
        True when the smallest finite value is below :data:`HU_AIR_BELOW` and the
        largest above :data:`HU_TISSUE_ABOVE`.
    """
    values = np.asarray(stack)
    if not np.issubdtype(values.dtype, np.number) or values.size == 0:
        return False
    if np.issubdtype(values.dtype, np.floating):
        values = values[np.isfinite(values)]
        if values.size == 0:
            return False
    return float(values.min()) < HU_AIR_BELOW and float(values.max()) > HU_TISSUE_ABOVE
