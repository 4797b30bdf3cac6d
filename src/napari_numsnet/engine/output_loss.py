"""The loss of a whole model output: every deep-supervision head against labels (and a
loss mask) at its own size, plus the binary cross-entropy of a classification-guided
module's presence output. The per-logit losses are :mod:`napari_numsnet.engine.losses`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from napari_numsnet.engine.losses import LossFn, no_autocast


def labels_at(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour down-sampling of ``labels`` ``(B, *spatial)`` to ``size``."""
    size = tuple(int(v) for v in size)
    if tuple(labels.shape[1:]) == size:
        return labels
    small = F.interpolate(labels[:, None].float(), size=size, mode="nearest")
    return small[:, 0].to(labels.dtype)


def labels_and_mask_at(
    labels: torch.Tensor, mask: torch.Tensor, size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Down-sample ``labels`` and a loss ``mask`` (both ``(B, *spatial)``) to ``size``.

    Where the size divides evenly, each output cell covers a window of the input; the
    mask is the window's *any* (max) and the label is the one at the window's first
    masked position, so an annotated slice at an odd z still counts at half depth (the
    nearest neighbour keeps even slices only). With a full mask this is the same as
    :func:`labels_at`. Uneven sizes fall back to nearest neighbour for both.

    Returns
    -------
    labels, mask
        ``(B, *size)``, dtypes of ``labels`` and bool.
    """
    size = tuple(int(v) for v in size)
    mask = mask.bool()
    spatial = tuple(labels.shape[1:])
    if spatial == size:
        return labels, mask
    if len(spatial) != len(size) or any(s % t for s, t in zip(spatial, size, strict=True)):
        return labels_at(labels, size), labels_at(mask.to(torch.uint8), size) > 0
    batch, dims = labels.shape[0], len(size)
    windowed = [batch]
    for s, t in zip(spatial, size, strict=True):
        windowed += [t, s // t]
    order = [0, *range(1, 2 * dims, 2), *range(2, 2 * dims + 1, 2)]
    lab = labels.reshape(windowed).permute(order).reshape(batch, *size, -1)
    msk = mask.reshape(windowed).permute(order).reshape(batch, *size, -1)
    first = msk.to(torch.uint8).argmax(dim=-1, keepdim=True)  # first masked, else 0
    return lab.gather(-1, first)[..., 0], msk.any(dim=-1)


def presence_targets(labels: torch.Tensor, num_classes: int, exclusive: bool) -> torch.Tensor:
    """``(B, C)`` float: 1 where the class of channel c occurs in the slice."""
    values = torch.arange(num_classes, device=labels.device) + (0 if exclusive else 1)
    return (labels.flatten(1)[:, None, :] == values[None, :, None]).any(-1).float()


def supervised_loss(
    loss_fn: LossFn,
    output,
    labels: torch.Tensor,
    exclusive: bool,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of a model output, deep supervision and classification guidance included.

    The loss is averaged over every head, each against labels (and ``mask``) at its own
    size; a presence output (classification-guided module) adds its binary
    cross-entropy. ``mask`` ``(B, *spatial)`` marks the pixels or voxels that count.
    """
    heads = output.heads if output.heads is not None else (output.logits,)
    total: torch.Tensor | float = 0.0
    for head in heads:
        size = head.shape[2:]
        if mask is None:
            head_labels, head_mask = labels_at(labels, size), None
        else:
            head_labels, head_mask = labels_and_mask_at(labels, mask, size)
        total = total + loss_fn(head, head_labels, exclusive, head_mask)
    loss = torch.as_tensor(total) / len(heads)
    if output.presence is not None:
        with no_autocast(output.presence):
            target = presence_targets(labels, output.presence.shape[1], exclusive)
            loss = loss + F.binary_cross_entropy_with_logits(output.presence.float(), target)
    return loss
