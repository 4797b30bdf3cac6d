"""The U-Net family of the NUMSnet paper as one graph of nodes X(i,j).

Depth ``i`` = 1..5 (1 = full resolution), column ``j`` (1 = encoder). A model is the
set of decoder nodes it has and the set of nodes whose output is fused with the
previous slice's:

========  =========================================  ====================
model     decoder nodes                              fused nodes
========  =========================================  ====================
UNet      X(4,2) X(3,3) X(2,4) X(1,5)                none
UNet++    every X(i,j) with i + j <= 6                none
NUMSnet   as UNet++                                  the six nested nodes
NUMS-all  as UNet++                                  all ten decoder nodes
========  =========================================  ====================

Node X(i,j), j >= 2, up-samples X(i+1,j-1) to width f_i with a 2x2 transposed
convolution, concatenates it with every existing X(i,k), k < j, and applies two
conv 3x3 + ReLU.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from napari_numsnet.models.base import ModelContract, ModelKind, check_input
from napari_numsnet.models.blocks import (
    Carry,
    DecoderBlock,
    EncoderBlock,
    SegmentationOutput,
    SliceFusion,
    UpConv,
)

DEPTH = 5
Node = tuple[int, int]

UNET_NODES: frozenset[Node] = frozenset({(4, 2), (3, 3), (2, 4), (1, 5)})
NESTED_NODES: frozenset[Node] = frozenset({(1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (3, 2)})
UNETPP_NODES: frozenset[Node] = UNET_NODES | NESTED_NODES


def node_name(node: Node) -> str:
    """``(1, 2)`` -> ``'x_1_2'``, the name used in the papers' figures."""
    return f"x_{node[0]}_{node[1]}"


class NestedUNet(ModelContract, nn.Module):
    """U-Net, UNet++, NUMSnet and NUMS-all, selected by their node sets.

    Parameters
    ----------
    in_channels
        Channels of an input slice.
    num_classes
        Output channels of the 1x1 head.
    widths
        Filters at depths 1..5, e.g. ``(32, 64, 128, 256, 512)``.
    decoder_nodes
        Decoder nodes X(i,j), j >= 2, that exist; must contain X(1,5).
    fused_nodes
        Nodes followed by a :class:`SliceFusion` unit (the NUMSnet family).
    bottom_batchnorm
        BatchNorm in the bottom node X(5,1) (UNet, wUNet) or not (UNet++ family).
    dropout
        Dropout after X(4,1) (into the pooling only) and after X(5,1).
    deep_supervision
        Extra 1x1 heads on X(1,2), X(1,3), X(1,4) (needs them in ``decoder_nodes``).

    Notes
    -----
    Input sides must be multiples of 16 (four 2x2 poolings).
    """

    required_multiple = 2 ** (DEPTH - 1)

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Iterable[int],
        decoder_nodes: Iterable[Node],
        fused_nodes: Iterable[Node] = (),
        bottom_batchnorm: bool = False,
        dropout: float = 0.5,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        self.widths = tuple(widths)
        if len(self.widths) != DEPTH:
            raise ValueError(f"widths needs {DEPTH} values, one per depth; got {self.widths}.")
        self.decoder_nodes = sorted(set(decoder_nodes), key=lambda n: (n[1], -n[0]))
        self.fused_nodes = frozenset(fused_nodes)
        if (1, 5) not in self.decoder_nodes:
            raise ValueError("decoder_nodes must contain the output node X(1,5).")
        missing = self.fused_nodes.difference(self.decoder_nodes)
        if missing:
            raise ValueError(f"fused nodes {sorted(missing)} are not decoder nodes.")
        self.kind = ModelKind.SEQUENCE if self.fused_nodes else ModelKind.SLICE

        f = self.widths
        self.encoders = nn.ModuleList(
            EncoderBlock(in_channels if i == 0 else f[i - 1], f[i]) for i in range(DEPTH - 1)
        )
        self.bottom = EncoderBlock(f[3], f[4], batchnorm=bottom_batchnorm)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)

        existing = {(i, 1) for i in range(1, DEPTH + 1)} | set(self.decoder_nodes)
        self.up = nn.ModuleDict()
        self.convs = nn.ModuleDict()
        self.fusion = nn.ModuleDict()
        self._inputs: dict[Node, list[Node]] = {}
        for i, j in self.decoder_nodes:
            if (i + 1, j - 1) not in existing:
                raise ValueError(f"node X({i},{j}) needs X({i + 1},{j - 1}).")
            skips = [(i, k) for k in range(1, j) if (i, k) in existing]
            self._inputs[(i, j)] = skips
            name = node_name((i, j))
            self.up[name] = UpConv(f[i], f[i - 1])
            self.convs[name] = DecoderBlock(f[i - 1] * (1 + len(skips)), f[i - 1])
            if (i, j) in self.fused_nodes:
                self.fusion[name] = SliceFusion(f[i - 1])

        self.head = nn.Conv2d(f[0], num_classes, kernel_size=1)
        self.supervised_nodes: list[Node] = []
        if deep_supervision:
            self.supervised_nodes = [(1, j) for j in (2, 3, 4)]
            absent = [n for n in self.supervised_nodes if n not in existing]
            if absent:
                raise ValueError("deep supervision needs the nested nodes X(1,2..4).")
            self.side_heads = nn.ModuleDict(
                {
                    node_name(n): nn.Conv2d(f[0], num_classes, kernel_size=1)
                    for n in self.supervised_nodes
                }
            )
        self.head_names = ("head", "side_heads") if self.supervised_nodes else ("head",)
        #: Deep supervision at inference: ``None`` averages the heads, k keeps X(1,k+1).
        self.inference_heads = (1, 2, 3, 4) if self.supervised_nodes else ()
        self.inference_head = None

    def forward(self, x: Tensor, carry: Carry | None = None) -> SegmentationOutput:
        """Segment a batch of slices.

        Parameters
        ----------
        x
            ``(B, in_channels, H, W)``, H and W multiples of 16. For the NUMSnet family
            the B slices are consecutive slices of one ordered sequence.
        carry
            Features of the slice before ``x[0]`` (from the previous call's output), or
            ``None`` at the start of a sequence.

        Returns
        -------
        SegmentationOutput
            Logits ``(B, num_classes, H, W)``, the carry for the next batch, and the
            deep-supervision heads when enabled.
        """
        check_input(self, x)
        nodes: dict[Node, Tensor] = {}
        h = x
        for i, encoder in enumerate(self.encoders, start=1):
            h = encoder(h)
            nodes[(i, 1)] = h
            if i == DEPTH - 1:
                h = self.dropout(h)  # X(4,1): dropout on the path into the pooling only
            h = self.pool(h)
        nodes[(DEPTH, 1)] = self.dropout(self.bottom(h))

        new_carry: Carry = {}
        for node in self.decoder_nodes:
            i, j = node
            name = node_name(node)
            up = self.up[name](nodes[(i + 1, j - 1)])
            out = self.convs[name](torch.cat([up] + [nodes[s] for s in self._inputs[node]], dim=1))
            if node in self.fused_nodes:
                out, new_carry[name] = self.fusion[name](
                    out, None if carry is None else carry[name]
                )
            nodes[node] = out

        logits = self.head(nodes[(1, 5)])
        heads = None
        if self.supervised_nodes:
            side = [self.side_heads[node_name(n)](nodes[n]) for n in self.supervised_nodes]
            heads = (*side, logits)
            if not self.training:
                if self.inference_head is not None:
                    logits = heads[self.inference_head - 1]
                else:
                    logits = torch.stack(heads).mean(dim=0)
        return SegmentationOutput(
            logits, new_carry if self.kind is ModelKind.SEQUENCE else None, heads
        )
