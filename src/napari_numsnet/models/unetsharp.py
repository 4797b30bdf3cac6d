"""UNet# (UNet-sharp): dense plus full-scale skip connections, eight supervised heads.

Node X(i,j), depth i = 0..4 (0 = full resolution), column j = 0..4, i + j <= 4 (the
paper's 0-based matrix). Every unit is f^2: (conv 3x3 -> BatchNorm -> ReLU) twice.

- Encoder X(i,0) = f^2(P(X(i-1,0))), P a 2x2 max-pooling.
- X(i,j), j >= 1 = f^2([X(i,0), ..., X(i,j-1), u^k(X(i+k, j-k)) for k = 1..j]): the dense
  skips of its depth plus the 2^k-times bilinear up-samplings of the deeper nodes on its
  anti-diagonal (k = 1 is the usual 2x up-sampling, k >= 2 the full-scale
  intraconnections: X(0,4) takes X(1,3) x2, X(2,2) x4, X(3,1) x8 and X(4,0) x16).
- Deep supervision: 1x1 heads on X(0,1..4) (full resolution: "accurate" mode averages them,
  "fast" mode prunes the network to X(0,k) and computes only the nodes it needs) and 3x3
  heads on X(1,3), X(2,2), X(3,1), X(4,0) at their own scales, compared with down-sampled
  labels during training.
- Classification-guided module (CGM) on the deepest features: adaptive average and max
  pooling, BatchNorm1d, Dropout, Linear, ReLU, BatchNorm1d, Dropout, Linear -> one presence
  logit per class. At inference a class judged absent from a slice is suppressed there.

Decisions: the paper puts a ReLU after the 1x1 heads; here heads output logits (a ReLU would
forbid negative scores under softmax). One CGM on X(4,0) serves all branches (the paper
uses two CGM variants per branch); its presence logits are trained with BCE against
"class present in the slice".
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_numsnet.models.base import ModelContract, ModelKind, check_input
from napari_numsnet.models.blocks import Carry, SegmentationOutput, conv3x3

DEPTH = 5


class ConvBNReLU2(nn.Sequential):
    """f^2 of the paper: (conv 3x3 -> BatchNorm -> ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            conv3x3(in_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ClassificationGuide(nn.Module):
    """CGM: does the slice contain each class? ``(B, F, h, w)`` -> ``(B, classes)`` logits."""

    def __init__(self, channels: int, classes: int, hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        self.classify = nn.Sequential(
            nn.BatchNorm1d(2 * channels),
            nn.Dropout(dropout),
            nn.Linear(2 * channels, hidden),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)], dim=1)
        if self.training and len(x) == 1:
            # BatchNorm1d cannot normalise a single slice: use the running statistics.
            self.classify.eval()
            try:
                return self.classify(pooled.flatten(1))
            finally:
                self.classify.train()
        return self.classify(pooled.flatten(1))


def _up(x: Tensor, factor: int) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class UNetSharp(ModelContract, nn.Module):
    """UNet# with deep supervision, pruning and the classification-guided module.

    Parameters
    ----------
    in_channels, num_classes
        Input channels and output channels of the heads.
    widths
        Filters at depths 0..4, ``(32, 64, 128, 256, 512)`` in the paper.
    exclusive
        How the CGM suppresses absent classes: exclusive classes get a very low logit
        (the background wins), independent planes too (their sigmoid goes to 0).
    classification_guided
        Build the CGM.

    Attributes
    ----------
    inference_head
        ``None`` (average the four full-resolution heads) or k = 1..4: keep head X(0,k)
        ("fast" mode, set with ``set_inference_head(k)``); only nodes with i + j <= k are
        computed.
    """

    required_multiple = 2 ** (DEPTH - 1)
    kind = ModelKind.SLICE
    head_names = ("full_heads", "scale_heads", "guide.classify")
    inference_heads = (1, 2, 3, 4)

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Iterable[int] = (32, 64, 128, 256, 512),
        exclusive: bool = True,
        classification_guided: bool = True,
    ) -> None:
        super().__init__()
        f = tuple(widths)
        if len(f) != DEPTH:
            raise ValueError(f"widths needs {DEPTH} values; got {f}.")
        self.widths, self.exclusive = f, exclusive
        self.nodes = nn.ModuleDict()
        for j in range(DEPTH):
            for i in range(DEPTH - j):
                if j == 0:
                    c_in = in_channels if i == 0 else f[i - 1]
                else:
                    c_in = j * f[i] + sum(f[i + k] for k in range(1, j + 1))
                self.nodes[f"x_{i}_{j}"] = ConvBNReLU2(c_in, f[i])
        self.pool = nn.MaxPool2d(2)
        self.full_heads = nn.ModuleList(nn.Conv2d(f[0], num_classes, 1) for _ in range(4))
        #: Heads on X(1,3), X(2,2), X(3,1), X(4,0), at 1/2, 1/4, 1/8, 1/16 of the side.
        self.scale_heads = nn.ModuleList(
            nn.Conv2d(f[i], num_classes, 3, padding=1) for i in range(1, DEPTH)
        )
        self.guide = ClassificationGuide(f[4], num_classes) if classification_guided else None

    def _compute(self, x: Tensor, level: int) -> dict[tuple[int, int], Tensor]:
        """Every node with i + j <= level (all of them at level 4).

        The encoder column X(i,0) stops at i = level too, unless the classification
        guide is built: it reads the deepest encoder node X(4,0).
        """
        out: dict[tuple[int, int], Tensor] = {}
        h = x
        for i in range(DEPTH if self.guide is not None else level + 1):
            if i:
                h = self.pool(h)
            h = self.nodes[f"x_{i}_0"](h)
            out[(i, 0)] = h
        for j in range(1, level + 1):
            for i in range(level - j + 1):
                parts = [out[(i, k)] for k in range(j)]
                parts += [_up(out[(i + k, j - k)], 2**k) for k in range(1, j + 1)]
                out[(i, j)] = self.nodes[f"x_{i}_{j}"](torch.cat(parts, dim=1))
        return out

    def _suppress(self, logits: Tensor, presence: Tensor) -> Tensor:
        """Push the logits of classes judged absent from a slice far down."""
        absent = (presence < 0)[:, :, None, None]
        if self.exclusive:
            absent = absent.clone()
            absent[:, 0] = False  # the background is never suppressed
        return logits.masked_fill(absent, -1e4)

    def forward(self, x: Tensor, carry: Carry | None = None) -> SegmentationOutput:
        """Segment ``x`` ``(B, in_channels, H, W)``, sides multiples of 16; ``carry`` unused."""
        check_input(self, x)
        fast = not self.training and self.inference_head is not None
        level = self.inference_head if fast and self.inference_head else DEPTH - 1
        nodes = self._compute(x, level)
        presence = self.guide(nodes[(DEPTH - 1, 0)]) if self.guide is not None else None
        if fast:
            logits = self.full_heads[level - 1](nodes[(0, level)])
            heads = None
        else:
            full = [head(nodes[(0, j)]) for j, head in enumerate(self.full_heads, start=1)]
            scaled = [
                head(nodes[(i, DEPTH - 1 - i)]) for i, head in enumerate(self.scale_heads, start=1)
            ]
            heads = (*full, *scaled)
            logits = torch.stack(full).mean(dim=0)
        if presence is not None and not self.training:
            logits = self._suppress(logits, presence)
        return SegmentationOutput(logits, None, heads, presence)
