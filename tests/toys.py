"""Toy data for tests that train: a bright square on faint noise."""

from __future__ import annotations

import numpy as np


def square_images(
    n: int, seed: int = 0, size: int = 32, side: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """A bright ``side``-pixel square (class 1) at a random place on faint noise.

    Returns ``(n, size, size)`` float32 images and int64 labels.
    """
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.1, (n, size, size)).astype(np.float32)
    labels = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        r, c = rng.integers(2, size - side - 2, size=2)
        images[i, r : r + side, c : c + side] += 1.0
        labels[i, r : r + side, c : c + side] = 1
    return images, labels
