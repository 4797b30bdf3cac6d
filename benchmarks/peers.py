"""Networks of other libraries, and variants of ours, trained and scored by this
project's own harness.

``monai_unet`` is MONAI's ``UNet`` (2D, strides 2, two residual units per level), the
network a user of this field would train next to ours. Its default widths are
``(32, 64, 128, 256, 512)`` so that a preset's width scale gives the same channels as
for DRSegUNet: the fast preset's half widths are ``(16, 32, 64, 128, 256)``, 1.63 M
parameters against DRSegUNet's 1.72 M. The wrapper only declares the model contract
and returns a :class:`SegmentationOutput`; MONAI builds the network.

``drsegunet_strided`` (DRSegUNet-S) is DRSegUNet's blocks and widths on MONAI's UNet
grid, the CPU variant measured in ``README.md`` section 0: it matched MONAI's step cost
but lost accuracy, so it stays a benchmark network and out of the package's registry.

:func:`register` adds these entries to the model registry of the running process, so
that ``accuracy_stacks.py --models monai_unet`` trains the peer with exactly the recipe,
batch source, validation and scoring of the registry models. The package never ships
them: MONAI is not one of its dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from napari_numsnet.config import ModelConfig
from napari_numsnet.models import registry
from napari_numsnet.models.base import ModelContract, ModelKind, check_input
from napari_numsnet.models.blocks import Carry, SegmentationOutput
from napari_numsnet.models.drsegunet import (
    DecoderStage,
    DRSegUNet,
    ResidualBlock,
    Stem,
    upsample3x3,
)
from napari_numsnet.models.registry import ModelSpec

#: Widths whose half (the fast preset) is MONAI's usual (16, 32, 64, 128, 256).
MONAI_UNET_WIDTHS = (32, 64, 128, 256, 512)


class MonaiUNet(ModelContract, nn.Module):
    """MONAI's 2D ``UNet`` behind the model contract.

    Parameters
    ----------
    in_channels, num_classes
        Input channels and output classes.
    widths
        Channels of the five levels (four strided down-samplings).
    """

    kind = ModelKind.SLICE
    required_multiple = 16
    head_names = ("net.model.2",)

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.net = UNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=tuple(widths),
            strides=(2,) * (len(widths) - 1),
            num_res_units=2,
        )

    def forward(self, x: Tensor, carry: object = None) -> SegmentationOutput:
        """``(B, C_in, H, W)`` -> logits ``(B, C, H, W)``."""
        check_input(self, x)
        return SegmentationOutput(self.net(x))


class StridedDRSegUNet(DRSegUNet):
    """DRSegUNet's blocks and widths on MONAI's UNet grid: a strided stem, a last encoder
    of stride 1, and one transposed conv back to the input's resolution.

    The thesis' network computes its stem and its last decoder block at full
    resolution, and each decoder at twice the width of the encoder beside it; on a CPU
    a step costs 2.6-2.8 times a MONAI ``UNet`` step of the same size (benchmarks,
    section 11). Here the stem halves the resolution, encoders 1-3 halve it again and
    encoder 4 keeps it (16x in all, as before), so every block runs at half the side
    of its counterpart; the head is conv-transpose 3x3 stride 2 (widths[1] ->
    widths[0]) -> BatchNorm -> ReLU -> conv 1x1. With one input channel and 3 classes
    at the thesis' widths: 6,881,651 parameters (the thesis' network: 6,877,011).

    Parameters
    ----------
    in_channels, num_classes, widths
        As for :class:`DRSegUNet`.
    """

    def __init__(
        self, in_channels: int, num_classes: int, widths: Iterable[int] = (16, 32, 64, 128, 256)
    ) -> None:
        super().__init__(in_channels, num_classes, widths)
        f = self.widths
        self.stem = Stem(in_channels, f[0], stride=2)
        self.encoders[3] = ResidualBlock(f[3], f[4], stride=1)
        self.decoders[0] = DecoderStage(f[4], f[3], f[4], upsample=False)
        self.upsample = nn.Sequential(
            upsample3x3(f[1], f[0]), nn.BatchNorm2d(f[0]), nn.ReLU(inplace=True)
        )
        self.head = nn.Conv2d(f[0], num_classes, kernel_size=1)

    def forward(self, x: Tensor, carry: Carry | None = None) -> SegmentationOutput:
        """Segment ``x`` ``(B, in_channels, H, W)``, H and W multiples of 16; ``carry`` unused."""
        check_input(self, x)
        return SegmentationOutput(self.head(self.upsample(self.decode(x))))


def _build_monai_unet(cfg: ModelConfig, widths: tuple[int, ...]) -> nn.Module:
    return MonaiUNet(cfg.input_channels, cfg.num_classes, widths)


PEERS = (
    ModelSpec(
        "monai_unet",
        "MONAI UNet",
        "MONAI's 2D UNet, strides 2, two residual units (a peer, benchmarks only)",
        MONAI_UNET_WIDTHS,
        _build_monai_unet,
    ),
    ModelSpec(
        "drsegunet_strided",
        "DRSegUNet-S",
        "DRSegUNet's blocks at half the resolution: strided stem (a variant, benchmarks only)",
        registry.DRSEG_WIDTHS,
        lambda cfg, w: StridedDRSegUNet(cfg.input_channels, cfg.num_classes, w),
    ),
)


def register(names: list[str]) -> None:
    """Add the peers among ``names`` to the registry of this process (idempotent)."""
    for spec in PEERS:
        if spec.name in names:
            registry.MODELS.setdefault(spec.name, spec)
