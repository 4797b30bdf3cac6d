"""DRSegUNet: the deep residual segmentation U-Net of the DRSegUNet thesis (tables 2-11).

Pre-activated residual blocks (BatchNorm -> ReLU -> conv) with strided convolutions in
place of pooling, a 16-filter stem, four encoder and four decoder stages, and a 1x1
softmax head. With one input channel and 3 classes it has 6,877,011 parameters as Keras
counts them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from napari_numsnet.models.base import ModelContract, ModelKind, check_input
from napari_numsnet.models.blocks import Carry, SegmentationOutput, conv3x3


def _preactivated(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """BatchNorm -> ReLU -> conv 3x3 (stride) -> BatchNorm -> ReLU -> conv 3x3."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=False),
        conv3x3(in_channels, out_channels, stride=stride),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        conv3x3(out_channels, out_channels),
    )


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Projection shortcut: conv 3x3 (stride) -> BatchNorm."""
    return nn.Sequential(conv3x3(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class ResidualBlock(nn.Module):
    """Pre-activated residual block with a conv 3x3 + BatchNorm shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = _preactivated(in_channels, out_channels, stride)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


class Stem(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> conv 3x3, plus a conv 3x3 -> BatchNorm shortcut.

    The thesis' stem keeps the resolution (``stride`` 1); the strided variant halves it.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(in_channels, out_channels, stride=stride),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


def upsample3x3(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """Transposed conv 3x3 stride 2: ``(B, in, H, W)`` -> ``(B, out, 2H, 2W)``."""
    return nn.ConvTranspose2d(
        in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1
    )


class DecoderStage(nn.Module):
    """Transposed conv 3x3 stride 2, concatenation with the skip, residual block.

    With ``upsample=False`` the first layer is a conv 3x3 of stride 1 (same parameter
    count): the skip already has the input's resolution.
    """

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, upsample: bool = True
    ) -> None:
        super().__init__()
        self.up: nn.Module = (
            upsample3x3(in_channels, out_channels)
            if upsample
            else conv3x3(in_channels, out_channels)
        )
        self.block = ResidualBlock(out_channels + skip_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class DRSegUNet(ModelContract, nn.Module):
    """Deep residual segmentation U-Net.

    Parameters
    ----------
    in_channels
        Channels of an input slice.
    num_classes
        Output channels of the 1x1 head.
    widths
        Stem and encoder widths, ``(16, 32, 64, 128, 256)`` in the thesis; the bridge
        and decoders reuse them in reverse.
    """

    required_multiple = 16
    kind = ModelKind.SLICE

    def __init__(
        self, in_channels: int, num_classes: int, widths: Iterable[int] = (16, 32, 64, 128, 256)
    ) -> None:
        super().__init__()
        f = tuple(widths)
        if len(f) != 5:
            raise ValueError(f"widths needs 5 values (stem + 4 encoders); got {f}.")
        self.widths = f
        self.stem = Stem(in_channels, f[0])
        self.encoders = nn.ModuleList(ResidualBlock(f[i], f[i + 1], stride=2) for i in range(4))
        self.bridge = nn.Sequential(
            nn.BatchNorm2d(f[4]),
            nn.ReLU(inplace=False),
            conv3x3(f[4], f[4]),
            nn.BatchNorm2d(f[4]),
            nn.ReLU(inplace=True),
            conv3x3(f[4], f[4]),
        )
        # Decoder 1-4: widths 256, 128, 64, 32; skips from encoder 3, 2, 1 and the stem.
        self.decoders = nn.ModuleList(
            DecoderStage(f[4] if k == 0 else f[5 - k], f[3 - k], f[4 - k]) for k in range(4)
        )
        self.head = nn.Conv2d(f[1], num_classes, kernel_size=1)

    def decode(self, x: Tensor) -> Tensor:
        """The last decoder's features: ``(B, widths[1], H', W')``, the input's size here."""
        skips = [self.stem(x)]
        for encoder in self.encoders:
            skips.append(encoder(skips[-1]))
        h = self.bridge(skips.pop())
        for decoder in self.decoders:
            h = decoder(h, skips.pop())
        return h

    def forward(self, x: Tensor, carry: Carry | None = None) -> SegmentationOutput:
        """Segment ``x`` ``(B, in_channels, H, W)``, H and W multiples of 16; ``carry`` unused."""
        check_input(self, x)
        return SegmentationOutput(self.head(self.decode(x)))
