"""MSDS-UNet: a 3D residual U-Net with two-pathway deep supervision (Yang et al.).

- Encoder and decoder blocks are 3D residual blocks: conv 3x3x3 -> BatchNorm -> ReLU ->
  conv 3x3x3 -> BatchNorm, plus a 1x1x1 projection shortcut, then ReLU.
- Four poolings. Stacks annotated at 10% are thin sub-volumes, so the stack axis is pooled
  only at the first two levels (``z_pool``); the slices are pooled at all four.
- Two pathways of deep supervision on the four decoder scales:
  local side outputs, a 1x1x1 convolution at the scale of the features, compared with
  down-sampled labels; and global side outputs, a 1x1x1 convolution followed by a 3D
  transposed convolution back to the input size, fused by a 1x1x1 convolution into the
  final prediction.

The model takes ``(B, C, D, H, W)`` sub-volumes; D a multiple of 4 and H, W multiples
of 16 with the default pooling.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from napari_numsnet.models.base import ModelContract, ModelKind, check_input
from napari_numsnet.models.blocks import Carry, SegmentationOutput


class ResidualBlock3d(nn.Module):
    """Two conv 3x3x3 + BatchNorm with a 1x1x1 projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm3d(out_channels),
        )
        self.shortcut = nn.Conv3d(in_channels, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class MSDSUNet3d(ModelContract, nn.Module):
    """3D U-Net with residual blocks and two-pathway deep supervision.

    Parameters
    ----------
    in_channels, num_classes
        Input channels and output channels.
    widths
        Filters at the five depths, ``(16, 32, 64, 128, 256)`` by default.
    z_pool
        Pooling factor of the stack axis at each of the four poolings.
    """

    kind = ModelKind.VOLUME
    required_multiple = 16
    head_names = ("local_heads", "global_heads", "global_ups", "fuse")

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Iterable[int] = (16, 32, 64, 128, 256),
        z_pool: Sequence[int] = (2, 2, 1, 1),
    ) -> None:
        super().__init__()
        f = tuple(widths)
        if len(f) != 5 or len(z_pool) != 4:
            raise ValueError(f"widths needs 5 values and z_pool 4; got {f}, {tuple(z_pool)}.")
        self.widths = f
        self.kernels = [(int(z), 2, 2) for z in z_pool]
        self.required_depth = math.prod(int(z) for z in z_pool)
        self.encoders = nn.ModuleList(
            ResidualBlock3d(in_channels if i == 0 else f[i - 1], f[i]) for i in range(5)
        )
        self.pools = nn.ModuleList(nn.MaxPool3d(k) for k in self.kernels)
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(f[i + 1], f[i], self.kernels[i], stride=self.kernels[i])
            for i in range(4)
        )
        self.decoders = nn.ModuleList(ResidualBlock3d(2 * f[i], f[i]) for i in range(4))
        # Local pathway: predictions at the scale of decoder levels 3, 2, 1 (0 = full).
        self.local_heads = nn.ModuleList(nn.Conv3d(f[i], num_classes, 1) for i in range(1, 4))
        # Global pathway: 1x1x1 conv then a transposed convolution up to the input size.
        self.global_heads = nn.ModuleList(nn.Conv3d(f[i], num_classes, 1) for i in range(4))
        self.global_ups = nn.ModuleList(
            nn.Identity() if i == 0 else self._up_to_full(i, num_classes) for i in range(4)
        )
        self.fuse = nn.Conv3d(4 * num_classes, num_classes, 1)

    def _up_to_full(self, level: int, channels: int) -> nn.ConvTranspose3d:
        z = 1
        for k in self.kernels[:level]:
            z *= k[0]
        factor = (z, 2**level, 2**level)
        return nn.ConvTranspose3d(channels, channels, factor, stride=factor)

    def forward(self, x: Tensor, carry: Carry | None = None) -> SegmentationOutput:
        """Segment sub-volumes ``x`` ``(B, in_channels, D, H, W)``; ``carry`` unused."""
        check_input(self, x)
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else self.pools[i - 1](x))
            skips.append(x)
        h_ = skips.pop()
        levels: list[Tensor] = []
        for i in reversed(range(4)):
            h_ = self.decoders[i](torch.cat([self.ups[i](h_), skips[i]], dim=1))
            levels.insert(0, h_)
        global_sides = [
            up(head(f))
            for f, head, up in zip(levels, self.global_heads, self.global_ups, strict=True)
        ]
        fused = self.fuse(torch.cat(global_sides, dim=1))
        if not self.training:
            return SegmentationOutput(fused)
        local_sides = [head(levels[i]) for i, head in enumerate(self.local_heads, start=1)]
        return SegmentationOutput(fused, None, (fused, *global_sides, *local_sides))
