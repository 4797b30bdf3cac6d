"""RAIU-Net: the residual attention inception U-Net of CHS-Net (Punn and Agarwal).

- Depthwise separable convolutions (DSC): a k x k depthwise convolution, then 1 x 1.
- Hybrid pooling: max pooling and spectral pooling in parallel, merged by a 1 x 1
  convolution; "valid" halves the side, "same" keeps it.
- Spectral pooling: the 2D DFT of each channel, the centred low frequencies kept (cropped
  to the output size, or the outer half of the band zeroed for "same"), the inverse DFT.
- Inception convolution (IC): DSC 1x1, 3x3, 5x5 and a "same" hybrid pooling in parallel,
  each with BatchNorm and ReLU, concatenated and merged by 1 x 1 conv -> BatchNorm -> ReLU.
- Residual inception block (RIB): IC -> IC, plus a DSC 3x3 -> BatchNorm shortcut.
- Spectral spatial and depth attention (SSD) on every skip: depth attention from a global
  spectral pooling (the DFT's DC term, i.e. the channel mean) through two 1 x 1
  convolutions; spatial attention from the deeper feature map and the strided skip.

Decisions: the attention descriptors are gated with a sigmoid (the paper's ReLU-activated
descriptors are unbounded); the network has four stages (three poolings) and a bridge.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_numsnet.models.base import ModelContract, ModelKind, check_input
from napari_numsnet.models.blocks import Carry, SegmentationOutput


def spectral_pool(x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Keep the centred low frequencies of ``x`` ``(B, C, H, W)``.

    ``size`` crops the spectrum to ``(h, w)`` (down-sampling); ``None`` keeps the size and
    zeroes the outer half of the band (a low-pass filter).
    """
    h, w = x.shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.float(), norm="ortho"), dim=(-2, -1))
    if size is None:
        keep = torch.zeros(h, w, device=x.device, dtype=torch.bool)
        keep[h // 4 : h - h // 4, w // 4 : w - w // 4] = True
        out = torch.fft.ifft2(torch.fft.ifftshift(spectrum * keep, dim=(-2, -1)), norm="ortho")
        return out.real.to(x.dtype)
    top, left = h // 2 - size[0] // 2, w // 2 - size[1] // 2  # the DC term sits at (h//2, w//2)
    cropped = spectrum[..., top : top + size[0], left : left + size[1]]
    out = torch.fft.ifft2(torch.fft.ifftshift(cropped, dim=(-2, -1)), norm="ortho")
    # Rescale so that a constant image keeps its value after cropping the spectrum.
    scale = (size[0] * size[1] / (h * w)) ** 0.5
    return (out.real * scale).to(x.dtype)


class DSC(nn.Sequential):
    """Depthwise separable convolution: k x k depthwise, then 1 x 1 pointwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel,
                stride=stride,
                padding=kernel // 2,
                groups=in_channels,
            ),
            nn.Conv2d(in_channels, out_channels, 1),
        )


class HybridPool(nn.Module):
    """Max and spectral pooling in parallel, merged by a 1 x 1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.max = nn.MaxPool2d(2) if downsample else nn.MaxPool2d(3, stride=1, padding=1)
        self.merge = nn.Conv2d(2 * in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2] // 2, x.shape[-1] // 2) if self.downsample else None
        return self.merge(torch.cat([self.max(x), spectral_pool(x, size)], dim=1))


def _bn_relu(module: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(module, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class InceptionConv(nn.Module):
    """IC: DSC 1x1, 3x3, 5x5 and hybrid pooling in parallel, merged by 1 x 1 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [
                _bn_relu(DSC(in_channels, out_channels, 1), out_channels),
                _bn_relu(DSC(in_channels, out_channels, 3), out_channels),
                _bn_relu(DSC(in_channels, out_channels, 5), out_channels),
                _bn_relu(HybridPool(in_channels, out_channels, downsample=False), out_channels),
            ]
        )
        self.merge = _bn_relu(nn.Conv2d(4 * out_channels, out_channels, 1), out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.merge(torch.cat([branch(x) for branch in self.branches], dim=1))


class ResidualInceptionBlock(nn.Module):
    """RIB: IC -> IC, plus a DSC 3x3 -> BatchNorm shortcut from the input."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            InceptionConv(in_channels, out_channels), InceptionConv(out_channels, out_channels)
        )
        self.shortcut = nn.Sequential(
            DSC(in_channels, out_channels, 3), nn.BatchNorm2d(out_channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


class SpectralDepthAttention(nn.Module):
    """Channel gate from the global spectral pooling (DC term) through two 1 x 1 convs."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.scnn = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        self.norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        descriptor = spectral_pool(x, (1, 1))
        return self.norm(x * torch.sigmoid(self.scnn(descriptor)))


class SpectralSpatialAttention(nn.Module):
    """Spatial gate on the skip ``(2m, 2n, p/2)`` from the deeper features ``(m, n, p)``."""

    def __init__(self, skip_channels: int, deep_channels: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(skip_channels, deep_channels, 3, stride=2, padding=1)
        self.deep = nn.Conv2d(deep_channels, deep_channels, 1)
        self.gamma = nn.Sequential(nn.BatchNorm2d(deep_channels), nn.ReLU(inplace=True))
        self.descriptor = nn.Conv2d(deep_channels, 1, 1)
        self.out = nn.Sequential(
            nn.Conv2d(skip_channels, skip_channels, 1), nn.BatchNorm2d(skip_channels)
        )

    def forward(self, skip: Tensor, deep: Tensor) -> Tensor:
        gamma = self.gamma(self.down(skip) + self.deep(deep))
        attention = torch.sigmoid(self.descriptor(gamma))
        attention = F.interpolate(
            attention, size=skip.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.out(skip * attention)


class RAIUNet(ModelContract, nn.Module):
    """Residual attention inception U-Net.

    Parameters
    ----------
    in_channels, num_classes
        Input channels and output channels of the 1 x 1 head.
    widths
        Filters of the four stages and the bridge. The paper gives none; the registry's
        ``(20, 40, 80, 160, 320)`` has 4.3M parameters, the paper's size of a RAIU-Net.
    """

    required_multiple = 16
    kind = ModelKind.SLICE

    def __init__(
        self, in_channels: int, num_classes: int, widths: Iterable[int] = (32, 64, 128, 256, 512)
    ) -> None:
        super().__init__()
        f = tuple(widths)
        if len(f) != 5:
            raise ValueError(f"widths needs 5 values (four stages and the bridge); got {f}.")
        self.widths = f
        self.encoders = nn.ModuleList(
            ResidualInceptionBlock(in_channels if i == 0 else f[i - 1], f[i]) for i in range(4)
        )
        self.pools = nn.ModuleList(HybridPool(f[i], f[i], downsample=True) for i in range(4))
        self.bridge = ResidualInceptionBlock(f[3], f[4])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(f[i + 1], f[i], 2, stride=2) for i in range(4))
        self.depth_attention = nn.ModuleList(SpectralDepthAttention(f[i]) for i in range(4))
        self.spatial_attention = nn.ModuleList(
            SpectralSpatialAttention(f[i], f[i + 1]) for i in range(4)
        )
        self.decoders = nn.ModuleList(ResidualInceptionBlock(2 * f[i], f[i]) for i in range(4))
        self.head = nn.Conv2d(f[0], num_classes, 1)

    def forward(self, x: Tensor, carry: Carry | None = None) -> SegmentationOutput:
        """Segment ``x`` ``(B, in_channels, H, W)``, sides multiples of 16; ``carry`` unused."""
        check_input(self, x)
        skips, h = [], x
        for encoder, pool in zip(self.encoders, self.pools, strict=True):
            h = encoder(h)
            skips.append(h)
            h = pool(h)
        h = self.bridge(h)
        for i in reversed(range(4)):
            skip = self.spatial_attention[i](self.depth_attention[i](skips[i]), h)
            h = self.decoders[i](torch.cat([self.ups[i](h), skip], dim=1))
        return SegmentationOutput(self.head(h))
