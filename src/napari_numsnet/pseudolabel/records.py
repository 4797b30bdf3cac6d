"""Settings and result records of the k-means pseudo-label pipeline (DRSegUNet thesis, 4.4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NumsnetError


@dataclass(frozen=True)
class KMeansConfig:
    """Settings of the k-means pseudo-labels.

    Parameters
    ----------
    window
        Intensity window ``(low, high)`` in HU applied first; the thesis uses the HU of air
        and bone, -1000..400. Ignored for data that is not in HU (percentiles are used).
    air_threshold
        HU below which a voxel counts as air (thesis: -170 HU).
    k
        Number of k-means clusters inside the lungs; label ``1..k`` in increasing
        intensity, ``0`` outside the lungs.
    line_length, line_angle
        Length (pixels) and angle (degrees, counterclockwise from the image rows' direction)
        of the line structuring element of the opening (thesis: 8 and 50).
    disk_radius
        Radius (pixels) of the disk of the closing (thesis: 6).
    seed
        Random state of k-means (and of its subsample on large stacks).
    max_gas_fraction
        A candidate lung is rejected as gas (bowel, stomach) when more than this fraction
        of its interior voxels is darker than -950 HU, the level of pure air.
    min_lung_fraction
        Smallest lung component, as a fraction of the body's voxels in the stack.
    """

    window: tuple[float, float] = (-1000.0, 400.0)
    air_threshold: float = -170.0
    k: int = 3
    line_length: int = 8
    line_angle: float = 50.0
    disk_radius: int = 6
    seed: int = 0
    max_gas_fraction: float = 0.4
    min_lung_fraction: float = 0.001

    def __post_init__(self) -> None:
        if int(self.k) != self.k or not 2 <= self.k <= 254:
            raise NumsnetError(
                f"k = {self.k} clusters cannot make pseudo-labels.",
                "Use an integer k from 2 to 254 (the thesis uses 3).",
            )
        low, high = self.window
        if not low < high:
            raise NumsnetError(
                f"The window {self.window} is empty.", "Give (low, high) with low < high."
            )
        if self.line_length < 1 or self.disk_radius < 0:
            raise NumsnetError(
                f"line_length = {self.line_length} and disk_radius = {self.disk_radius} "
                "are not valid structuring elements.",
                "Use line_length >= 1 and disk_radius >= 0.",
            )
        if not 0.0 <= self.max_gas_fraction <= 1.0 or not 0.0 <= self.min_lung_fraction < 1.0:
            raise NumsnetError(
                "max_gas_fraction and min_lung_fraction are fractions.",
                "Give values between 0 and 1.",
            )


@dataclass
class PseudoLabelResult:
    """Every step of the pipeline, so that each one can be shown.

    Attributes
    ----------
    labels
        ``(Z, H, W) uint8`` cleaned pseudo-labels: 0 outside the lungs, ``1..k`` inside
        in increasing intensity (k = 3: 1 normal aerated lung, 2 ground-glass opacity,
        3 consolidation and vessels).
    lung_mask, body_mask, air_mask
        ``(Z, H, W) bool`` steps 2 and 1: lungs, body (largest non-air region of each slice,
        holes filled) and air (below the threshold).
    centers
        ``(k,)`` cluster centres in increasing order, in the units of the input (HU for CT).
    hounsfield
        Whether the input was taken to be in HU; if not, percentiles replaced the HU levels.
    notes
        What the pipeline decided, in words (fallbacks, components kept and rejected).
    raw_labels
        ``(Z, H, W) uint8`` k-means classes before the morphological clean-up.
    windowed
        ``(Z, H, W) float32`` the input clipped to ``window``.
    window
        The window applied ``(low, high)``, input units.
    threshold
        The air threshold applied, input units.
    """

    labels: np.ndarray
    lung_mask: np.ndarray
    body_mask: np.ndarray
    air_mask: np.ndarray
    centers: np.ndarray
    hounsfield: bool
    notes: list[str]
    raw_labels: np.ndarray
    windowed: np.ndarray
    window: tuple[float, float]
    threshold: float

    def masked_image(self) -> np.ndarray:
        """Step 3: ``(Z, H, W) float32`` windowed image in the lungs, ``window[0]`` elsewhere."""
        return np.where(self.lung_mask, self.windowed, np.float32(self.window[0]))
