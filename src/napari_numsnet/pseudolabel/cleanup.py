"""Step 5 of the k-means pseudo-labels: the morphological clean-up of the thesis.

Each class is opened (erosion then dilation) with a line structuring element, length 8 at
50 degrees, then closed with a disk of radius 6, slice by slice. The thesis used MATLAB's
``strel('line', 8, 50)`` and ``strel('disk', 6)``; the line here is built the same way as
MATLAB's, the disk is the exact digital disk (MATLAB approximates it by line segments).

Overlaps and gaps are resolved the same way every time: where cleaned classes overlap the
brightest one wins (opacities are what the pseudo-labels are for, and the closing of the
large normal-lung class would otherwise cover them); a lung pixel that no cleaned class
covers (a speck removed by the opening) takes the class of the nearest covered pixel of
its slice; a slice where nothing survives keeps its k-means classes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.morphology import disk

from .records import KMeansConfig


def _round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def line_element(length: int, angle: float) -> np.ndarray:
    """Flat line structuring element, as MATLAB's ``strel('line', length, angle)``.

    The line is symmetric about the centre pixel; its ends lie at ``+-(length - 1) / 2``
    pixels along ``angle``, rounded half away from zero, so that a length 8 at 50 degrees
    gives 7 pixels from (row +3, col -2) to (row -3, col +2) about the centre.

    Parameters
    ----------
    length
        Approximate length in pixels (>= 1).
    angle
        Degrees, counterclockwise from the horizontal (columns) axis; rows point down.

    Returns
    -------
    np.ndarray
        ``(2 * |dr| + 1, 2 * |dc| + 1) bool`` with the line's pixels set.
    """
    theta = math.radians(angle)
    half = (length - 1) / 2.0
    dc = _round_half_away(half * math.cos(theta))
    dr = -_round_half_away(half * math.sin(theta))
    rows, cols = draw_line(-dr, -dc, dr, dc)
    element = np.zeros((2 * abs(dr) + 1, 2 * abs(dc) + 1), dtype=bool)
    element[rows + abs(dr), cols + abs(dc)] = True
    return element


def _open_close(mask: np.ndarray, line: np.ndarray, circle: np.ndarray, pad: int) -> np.ndarray:
    """Opening by ``line`` then closing by ``circle`` of each slice of ``(Z, H, W)`` mask."""
    padded = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)))
    opened = ndi.binary_opening(padded, structure=line[None])
    closed = ndi.binary_closing(opened, structure=circle[None])
    return closed[:, pad:-pad, pad:-pad] if pad else closed


def clean_labels(
    raw: np.ndarray, lung: np.ndarray, config: KMeansConfig | None = None
) -> np.ndarray:
    """Clean the k-means classes of each slice (thesis step 6).

    Parameters
    ----------
    raw
        ``(Z, H, W)`` integer classes: 0 outside the lungs, ``1..k`` inside.
    lung
        ``(Z, H, W) bool`` the lungs; the result is 0 outside them.
    config
        ``line_length``, ``line_angle``, ``disk_radius``; ``None`` for the thesis' values.

    Returns
    -------
    np.ndarray
        ``(Z, H, W) uint8`` cleaned classes, every lung pixel in ``1..k``.
    """
    config = config or KMeansConfig()
    line = line_element(config.line_length, config.line_angle)
    circle = disk(config.disk_radius).astype(bool)
    pad = max(*line.shape, *circle.shape)
    cleaned = np.zeros(raw.shape, dtype=np.uint8)
    for c in range(1, int(raw.max()) + 1):  # increasing: the brighter class overwrites
        cleaned[_open_close(raw == c, line, circle, pad) & lung] = c
    for z in np.flatnonzero((lung & (cleaned == 0)).any(axis=(1, 2))):
        covered = cleaned[z] > 0
        if not covered.any():
            cleaned[z] = np.where(lung[z], raw[z], 0)
            continue
        idx = ndi.distance_transform_edt(~covered, return_distances=False, return_indices=True)
        nearest = cleaned[z][idx[0], idx[1]]
        cleaned[z] = np.where(lung[z] & ~covered, nearest, cleaned[z])
    return cleaned
