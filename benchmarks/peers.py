"""Networks of other libraries, trained and scored by this project's own harness.

``monai_unet`` is MONAI's ``UNet`` (2D, strides 2, two residual units per level), the
network a user of this field would train next to ours. Its default widths are
``(32, 64, 128, 256, 512)`` so that a preset's width scale gives the same channels as
for DRSegUNet: the fast preset's half widths are ``(16, 32, 64, 128, 256)``, 1.63 M
parameters against DRSegUNet's 1.72 M. The wrapper only declares the model contract
and returns a :class:`SegmentationOutput`; MONAI builds the network.

:func:`register` adds these entries to the model registry of the running process, so
that ``accuracy_stacks.py --models monai_unet`` trains the peer with exactly the recipe,
batch source, validation and scoring of the registry models. The package never ships
them: MONAI is not one of its dependencies.
"""

from __future__ import annotations

from torch import Tensor, nn

from napari_numsnet.config import ModelConfig
from napari_numsnet.models import registry
from napari_numsnet.models.base import ModelContract, ModelKind, check_input
from napari_numsnet.models.blocks import SegmentationOutput
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
)


def register(names: list[str]) -> None:
    """Add the peers among ``names`` to the registry of this process (idempotent)."""
    for spec in PEERS:
        if spec.name in names:
            registry.MODELS.setdefault(spec.name, spec)
