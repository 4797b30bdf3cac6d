"""Which slices of a stack to annotate, and which ones are annotated.

NUMSnet paper: annotate 10% of the slices of a stack for training and keep 1% of the
remaining slices for validation. Three ways to choose the training slices:

- ``initial_seq`` (Initial,Seq): consecutive slices from the first slice;
- ``mid_seq`` (Mid,Seq): consecutive slices from the middle slice;
- ``mid_rand`` (Mid,Rand, the paper's best): slices drawn at random around the middle,
  kept in ascending order;
- ``spread``: one slice near the centre of each of ``n`` equal parts of the stack (or of
  the extent that holds the body), so that the top and the bottom are annotated too.
  Mid,Rand only ever annotates the middle half, and the classes that live near the ends
  (lungs above an abdominal CT, apex and base of the heart) are never shown to the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_numsnet.config import SamplingConfig
from napari_numsnet.errors import NumsnetError

STRATEGIES = ("initial_seq", "mid_seq", "mid_rand", "spread")


@dataclass(frozen=True, eq=False)
class SliceSplit:
    """Slice indices along the stack axis chosen for training and validation.

    Parameters
    ----------
    train
        ``(n_train,)`` int64, ascending.
    val
        ``(n_val,)`` int64, ascending, disjoint from ``train``; may be empty.
    """

    train: np.ndarray
    val: np.ndarray


def _round_half_up(x: float) -> int:
    # Python's round() rounds halves to even (round(2.5) == 2); a count of slices should not.
    return math.floor(x + 0.5 + 1e-9)


def n_train_slices(n_slices: int, fraction: float) -> int:
    """Number of training slices: ``max(1, fraction * n_slices)`` rounded half up."""
    return max(1, _round_half_up(fraction * n_slices))


def spread_indices(start: int, stop: int, n: int) -> np.ndarray:
    """``n`` distinct slices in ``[start, stop)``, one at the centre of each of ``n`` equal parts.

    Parameters
    ----------
    start, stop
        The extent to cover (slice indices, ``stop`` excluded).
    n
        Number of slices, at most ``stop - start``.

    Returns
    -------
    np.ndarray
        ``(n,)`` int64, strictly ascending.
    """
    width = stop - start
    n = min(n, width)
    centres = start + (np.arange(n) + 0.5) * width / n
    return np.unique(np.clip(np.floor(centres).astype(np.int64), start, stop - 1))


def _gap_centres(train: np.ndarray, rest: np.ndarray, n: int) -> np.ndarray:
    """``n`` of the ``rest`` slices farthest from the training slices, spread out."""
    distance = np.min(np.abs(rest[:, None] - train[None, :]), axis=1)
    far = rest[distance == distance.max()] if n == 1 else rest[distance >= np.median(distance)]
    if far.size < n:
        far = rest
    pick = spread_indices(0, far.size, n)
    return np.sort(far[pick])


def _train_indices(
    n_slices: int, n_train: int, strategy: str, rng: np.random.Generator
) -> np.ndarray:
    middle = n_slices // 2
    if strategy == "spread":
        return spread_indices(0, n_slices, n_train)
    if strategy == "initial_seq":
        return np.arange(n_train)
    if strategy == "mid_seq":
        start = min(middle, n_slices - n_train)
        return np.arange(start, start + n_train)
    # mid_rand: a window over the middle half of the stack, at least n_train wide.
    width = min(n_slices, max(n_train, _round_half_up(n_slices / 2)))
    start = min(max(0, middle - width // 2), n_slices - width)
    chosen = rng.choice(np.arange(start, start + width), size=n_train, replace=False)
    return np.sort(chosen)


def select_slices(
    n_slices: int,
    config: SamplingConfig | None = None,
    extent: tuple[int, int] | None = None,
) -> SliceSplit:
    """Choose the slices to annotate for training and validation.

    Parameters
    ----------
    n_slices
        Number of slices along the stack axis (at least 2).
    config
        Strategy, fractions and seed; ``None`` means the defaults (``mid_rand``, 10%,
        1% of the rest, seed 0).
    extent
        ``(first, stop)``: the slices that hold the body or the foreground, which
        ``spread`` covers (default: the whole stack). The number of slices is still
        ``fraction`` of the whole stack.

    Returns
    -------
    SliceSplit
        ``train``: ``max(1, round(fraction * n_slices))`` indices; ``val``:
        ``max(1, round(val_fraction * rest))`` indices drawn at random from the rest,
        none when no slice is left. Both ascending, disjoint, in ``[0, n_slices)``.
        The same ``config.seed`` gives the same split.

    Raises
    ------
    NumsnetError
        Fewer than 2 slices, a fraction outside its range, or an unknown strategy.
    """
    config = config if config is not None else SamplingConfig()
    if n_slices < 2:
        raise NumsnetError(
            f"The stack has {n_slices} slice(s); at least 2 are needed to choose from.",
            "Open a 3D stack, or check that the stack axis is the right one.",
        )
    if not 0.0 < config.fraction <= 1.0:
        raise NumsnetError(
            f"Training fraction {config.fraction} is outside (0, 1].",
            "Give the share of slices to annotate, e.g. 0.1 for 10%.",
        )
    if not 0.0 <= config.val_fraction <= 1.0:
        raise NumsnetError(
            f"Validation fraction {config.val_fraction} is outside [0, 1].",
            "Give the share of the remaining slices to validate on, e.g. 0.01 for 1%.",
        )
    if config.strategy not in STRATEGIES:
        raise NumsnetError(
            f"Unknown slice strategy {config.strategy!r}.",
            f"Choose one of: {', '.join(STRATEGIES)}.",
        )
    rng = np.random.default_rng(config.seed)
    n_train = n_train_slices(n_slices, config.fraction)
    if config.strategy == "spread":
        first, stop = extent if extent is not None else (0, n_slices)
        first, stop = max(0, int(first)), min(n_slices, int(stop))
        if stop - first < n_train:
            first, stop = 0, n_slices
        train = spread_indices(first, stop, n_train)
    else:
        train = np.asarray(_train_indices(n_slices, n_train, config.strategy, rng), dtype=np.int64)
    rest = np.setdiff1d(np.arange(n_slices, dtype=np.int64), train)
    n_val = min(rest.size, max(1, _round_half_up(config.val_fraction * rest.size)))
    if config.strategy == "spread" and n_val:
        val = _gap_centres(train, rest, n_val)
    else:
        val = np.sort(rng.choice(rest, size=n_val, replace=False)) if n_val else rest[:0]
    return SliceSplit(train=train, val=val.astype(np.int64))


def annotated_slices(labels: np.ndarray, recorded: Sequence[int] | None = None) -> np.ndarray:
    """Indices of the slices that carry annotations.

    Parameters
    ----------
    labels
        ``(Z, H, W)`` integer labels, 0 = background.
    recorded
        Slices the user marked as annotated (an empty slice can be a valid, all
        background annotation). ``None``: every slice with any non-zero label.

    Returns
    -------
    np.ndarray
        int64 indices, ascending, unique.

    Raises
    ------
    NumsnetError
        ``labels`` is not 3D, a recorded index is out of range, or no slice is annotated.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise NumsnetError(
            f"The label stack has shape {labels.shape}; a 3D stack (Z, H, W) is needed.",
            "Pass the labels of the whole stack.",
        )
    n_slices = labels.shape[0]
    if recorded is not None:
        index = np.asarray(list(recorded), dtype=np.int64)
        bad = index[(index < 0) | (index >= n_slices)]
        if bad.size:
            raise NumsnetError(
                f"Annotated slice indices {sorted(set(bad.tolist()))} are outside the stack "
                f"(0..{n_slices - 1}).",
                "Record indices along the stack axis of this stack.",
            )
        index = np.unique(index)
    else:
        index = np.flatnonzero(labels.reshape(n_slices, -1).any(axis=1)).astype(np.int64)
    if index.size == 0:
        raise NumsnetError(
            "No slice is annotated.",
            "Paint at least one slice, or mark empty slices as done.",
        )
    return index
