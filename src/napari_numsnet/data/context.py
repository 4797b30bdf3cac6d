"""2.5D input: a slice together with its neighbours along the stack, as channels.

A slice model that sees only its slice cannot tell a vessel from a lesion that the next
slice would show; giving it the ``context`` slices on each side as extra input channels
is the usual cheap answer (nnU-Net's 2D configuration does not, several lung and liver
pipelines do). The neighbours past the ends of the stack repeat its first and last
slice, so the first slice of a stack sees itself, as NUMSnet's first slice does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_numsnet.errors import NumsnetError


def context_indices(
    n_slices: int, centres: Sequence[int] | np.ndarray, context: int
) -> np.ndarray:
    """Stack indices of each centre slice and its neighbours.

    Parameters
    ----------
    n_slices
        Slices in the stack.
    centres
        ``(N,)`` indices of the slices to give context to.
    context
        Neighbours on each side (0: the slice alone).

    Returns
    -------
    np.ndarray
        ``(N, 2 * context + 1)`` int64, ascending along the stack in each row, clipped
        to ``[0, n_slices - 1]``; column ``context`` is the centre slice itself.
    """
    if context < 0:
        raise NumsnetError(
            f"Context {context} is below 0.",
            "Use 0 (the slice alone) or the number of neighbouring slices on each side.",
        )
    offsets = np.arange(-context, context + 1)
    rows = np.asarray(centres, dtype=np.int64)[:, None] + offsets[None]
    return np.clip(rows, 0, n_slices - 1)


def with_context(
    images: np.ndarray, context: int, centres: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """Slices of ``images`` with their neighbours as channels.

    Parameters
    ----------
    images
        ``(Z, H, W)`` preprocessed slices in stack order.
    context
        Neighbours on each side.
    centres
        Indices of the slices to return; ``None``: every slice.

    Returns
    -------
    np.ndarray
        ``(N, 2 * context + 1, H, W)``, the dtype of ``images``; channel ``context`` is
        the slice itself, lower channels the slices before it.
    """
    if images.ndim != 3:
        raise NumsnetError(
            f"Expected a stack of slices (Z, H, W); got shape {images.shape}.",
            "Pass a 3D array with the stack axis first.",
        )
    if centres is None:
        centres = np.arange(len(images))
    return np.ascontiguousarray(images[context_indices(len(images), centres, context)])
