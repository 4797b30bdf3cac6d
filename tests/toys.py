"""Toy data for tests that train: a bright square on faint noise."""

from __future__ import annotations

import numpy as np


def square_images(
    n: int = 6, size: int = 32, seed: int = 0, side: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """A learnable toy problem: a bright square (class 1) on faint noise (class 0).

    Returns
    -------
    images
        ``(n, size, size)`` float32, noise of standard deviation 0.1 plus 1 in the square.
    labels
        ``(n, size, size)`` int64, 1 in the square, 0 elsewhere.
    """
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.1, (n, size, size)).astype(np.float32)
    labels = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        r, c = rng.integers(2, size - side - 2, size=2)
        images[i, r : r + side, c : c + side] += 1.0
        labels[i, r : r + side, c : c + side] = 1
    return images, labels
