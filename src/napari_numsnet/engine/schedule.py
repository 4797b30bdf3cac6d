"""Optimiser and learning-rate schedule of a training run.

The NUMSnet paper trains with Adam at a constant 1e-3. With a few hundred steps on a
handful of annotated slices a constant rate leaves the weights wandering at the end of
the run, so the default recipes warm up linearly and decay to 0 (cosine, or nnU-Net's
poly ``(1 - t)^0.9``) over the step budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from napari_numsnet.config import TrainConfig
from napari_numsnet.errors import NumsnetError


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter], config: TrainConfig
) -> torch.optim.Optimizer:
    """Adam (the paper) or AdamW with ``config.weight_decay``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay
        )
    raise NumsnetError(f"Unknown optimizer {config.optimizer!r}.", "Choose adam or adamw.")


def learning_rate_factor(step: int, total: int, config: TrainConfig) -> float:
    """Multiplier of the peak learning rate before optimiser step ``step`` (0-based).

    Parameters
    ----------
    step
        Steps already taken in this run.
    total
        Steps the run will take in all.
    config
        ``schedule`` and ``warmup_steps``.

    Returns
    -------
    float
        In ``(0, 1]``: linear warm-up over ``warmup_steps``, then constant, cosine or
        poly decay towards 0 at ``total``.
    """
    warmup = min(max(0, config.warmup_steps), max(0, total - 1))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if config.schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    if config.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * t))
    elif config.schedule == "poly":
        factor = (1.0 - t) ** 0.9
    else:
        raise NumsnetError(
            f"Unknown schedule {config.schedule!r}.", "Choose constant, cosine or poly."
        )
    return max(factor, 1e-3)


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every parameter group's learning rate to ``value``."""
    for group in optimizer.param_groups:
        group["lr"] = value
