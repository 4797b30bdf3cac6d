"""Building blocks shared by the U-Net family (NUMSnet paper, Fig. 3-5 and appendix).

Every convolution uses 'same' padding and He-normal initialisation, as the reference
Keras code does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

#: Features carried from one slice to the next by the NUMSnet family: node name -> (1, F, h, w).
Carry = dict[str, Tensor]


class SegmentationOutput(NamedTuple):
    """What every model's ``forward`` returns.

    Attributes
    ----------
    logits
        ``(B, C, H, W)`` class scores before softmax or sigmoid.
    carry
        For the NUMSnet family, the features of the last slice of the batch that the next
        batch of the same ordered sequence continues from; ``None`` for other models.
    heads
        With deep supervision, the logits of every head ``(B, C, h, w)``, in training
        mode; a head may be smaller than the input (compare it with down-sampled labels).
        ``None`` otherwise.
    presence
        ``(B, C)`` logits of "class present in the slice" from a classification-guided
        module (UNet#), trained with binary cross-entropy; ``None`` otherwise.
    """

    logits: Tensor
    carry: Carry | None = None
    heads: tuple[Tensor, ...] | None = None
    presence: Tensor | None = None


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with 'same' padding and bias, He-normal initialised."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return conv


class EncoderBlock(nn.Sequential):
    """X(i,1): conv 3x3 -> ReLU -> BatchNorm, twice (BatchNorm after the activation).

    Parameters
    ----------
    in_channels, out_channels
        Channels in and out.
    batchnorm
        ``False`` gives the plain conv -> ReLU pair used for the bottom node of UNet++.
    """

    def __init__(self, in_channels: int, out_channels: int, batchnorm: bool = True) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers += [conv3x3(c_in, out_channels), nn.ReLU(inplace=True)]
            if batchnorm:
                layers.append(nn.BatchNorm2d(out_channels))
        super().__init__(*layers)


class DecoderBlock(nn.Sequential):
    """Convolutions of a decoder or nested node X(i,j), j >= 2: conv 3x3 + ReLU twice."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            conv3x3(in_channels, out_channels),
            nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels),
            nn.ReLU(inplace=True),
        )


class UpConv(nn.ConvTranspose2d):
    """Transposed convolution 2x2, stride 2: doubles the side of a deeper node."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=2, stride=2)
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        nn.init.zeros_(self.bias)


class SliceFusion(nn.Module):
    """NUMSnet's slice-fusion unit: a node's features merged with the previous slice's.

    ``fused_n = ReLU(conv3x3(ReLU(conv3x3(concat[node_n, node_(n-1)]))))``, 2F -> F -> F.

    The slices of a batch are consecutive slices of one ordered sequence, so the
    previous slice's features are the batch shifted by one. The first slice of the
    batch takes them from ``carry`` (the last slice of the previous batch) or, at the
    start of a sequence, from itself.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convs = DecoderBlock(2 * channels, channels)

    def forward(self, node: Tensor, carry: Tensor | None) -> tuple[Tensor, Tensor]:
        """Fuse ``node`` (B, F, h, w) with its previous slice; return (fused, new carry)."""
        first = node[:1] if carry is None else carry.to(dtype=node.dtype)
        previous = torch.cat([first, node[:-1]], dim=0)
        fused = self.convs(torch.cat([node, previous], dim=1))
        return fused, node[-1:]


def keras_parameter_count(model: nn.Module) -> int:
    """Parameters as Keras counts them: weights plus BatchNorm running mean and variance.

    This is the count the papers report (NUMSnet paper, Table I).
    """
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert module.running_mean is not None and module.running_var is not None
            total += module.running_mean.numel() + module.running_var.numel()
    return total
