"""An exponential moving average of a network's weights (Polyak averaging).

The averaged weights ``w_avg <- d * w_avg + (1 - d) * w`` after every optimiser step are
what mean-teacher methods predict with and what timm's ``ModelEmaV2`` keeps: they move
less from step to step than the trained weights, so the validation that picks the best
weights sees less noise. Buffers (BatchNorm's running statistics) are averaged the same
way; integer buffers (BatchNorm's step counter) are copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverage:
    """Exponential moving average of ``net``'s state.

    Parameters
    ----------
    net
        The network being trained (the plain model, not a DDP wrapper).
    decay
        ``d`` in ``(0, 1)``: the average spans about ``1 / (1 - d)`` steps. For the first
        steps the decay is ``min(d, (1 + n) / (10 + n))`` after ``n`` updates, so that the
        average does not keep the initial weights for long.

    Attributes
    ----------
    state
        The averaged ``state_dict``, on the network's device.
    updates
        Steps averaged so far.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), not {decay}")
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Average ``net``'s current weights in (after an optimiser step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in net.state_dict().items():
            kept = self.state[key]
            if kept.dtype.is_floating_point:
                kept.lerp_(value.detach(), 1.0 - decay)
            else:
                kept.copy_(value)

    @contextlib.contextmanager
    def swapped_in(self, net: nn.Module) -> Iterator[None]:
        """Give ``net`` the averaged weights inside the block, its own ones after it."""
        live = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(self.state)
        try:
            yield
        finally:
            net.load_state_dict(live)
