"""A random window of an affine map's output: the training patches of
``TrainConfig.patch_size`` (:func:`napari_numsnet.data.augment.random_affine_patch`)."""

from __future__ import annotations

import torch


def patch_window(
    theta: torch.Tensor, height: int, width: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """Narrow affine maps to a random ``size`` x ``size`` window of their output.

    Parameters
    ----------
    theta
        ``(n, 2, 3)`` output-to-input maps in the normalised coordinates of
        ``F.affine_grid`` (:func:`affine_matrices`).
    height, width
        The slice's size, pixels; ``size`` must be below both.
    size
        Side of the window, pixels, at the slice's scale (no resampling).
    generator
        Source of the window's place, uniform over the transformed slice; drawn after
        the maps, so a run without patches draws as before.

    Returns
    -------
    torch.Tensor
        ``(n, 2, 3)`` maps from the window's normalised coordinates to the input's.
    """
    n = theta.shape[0]
    extent = torch.tensor(
        [size / width, size / height], device=theta.device, dtype=theta.dtype
    )  # the window's half-side over the slice's, x then y
    u = torch.rand(n, 2, generator=generator, device=generator.device).to(theta.device)
    centre = (2 * u - 1) * (1 - extent)  # (n, 2) in the transformed slice's coordinates
    linear = theta[:, :, :2]
    narrowed = linear * extent.view(1, 1, 2)
    translation = theta[:, :, 2:] + linear @ centre.to(theta.dtype).unsqueeze(2)
    return torch.cat([narrowed, translation], dim=2)
