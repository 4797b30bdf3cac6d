"""Training losses on logits: BDL (BCE / 2 + Dice, NUMSnet paper eq. 8-10), Dice and CE.

Every loss takes the raw head output ``logits`` of shape ``(B, C, H, W)`` (any number of
spatial axes works the same way), an integer label map ``labels`` of shape ``(B, H, W)``
and an optional pixel ``mask`` of shape ``(B, H, W)`` that says which pixels count.
Pixels outside the mask never enter the value nor the gradient, whatever their label
(for example ``-1`` or ``255`` on unannotated pixels).

``exclusive=True``: channel ``k`` is label value ``k`` (0 is the background) and the
probabilities are the softmax over channels. ``exclusive=False``: channel ``k`` is the
binary plane of label value ``k + 1`` and the probabilities are independent sigmoids.

The losses compute in float32 with autocast switched off, so they are safe to call
inside a mixed-precision region, and they return 0 (with a gradient) when no pixel
counts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from napari_numsnet.errors import NumsnetError

LossFn = Callable[..., torch.Tensor]

_EPS = 1e-7  # clamp of probabilities inside the logarithms of the cross-entropy


def one_hot_planes(labels: torch.Tensor, num_classes: int, exclusive: bool) -> torch.Tensor:
    """Turn a label map into one binary plane per output channel (paper eq. 2).

    Parameters
    ----------
    labels
        ``(B, H, W)`` integer label values.
    num_classes
        Output channels ``C`` of the model.
    exclusive
        ``True``: plane ``k`` marks label value ``k``, values must lie in ``[0, C)``.
        ``False``: plane ``k`` marks label value ``k + 1``, values must lie in ``[0, C]``.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` float32 of 0 and 1.
    """
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise NumsnetError(
            f"Labels must be an integer tensor, got {labels.dtype}.",
            "Convert the label map with .long() before computing the loss.",
        )
    if num_classes < 1:
        raise NumsnetError(
            f"num_classes must be at least 1, got {num_classes}.",
            "Pass the number of output channels of the model.",
        )
    top = num_classes - 1 if exclusive else num_classes
    if labels.numel() > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high > top:
            kind = "exclusive" if exclusive else "independent"
            raise NumsnetError(
                f"Label values span {low}..{high}, but a model with {num_classes} {kind} "
                f"output channels accepts 0..{top}.",
                "Check num_classes and the exclusive setting of the model, or mask out "
                "pixels with other values.",
            )
    first = 0 if exclusive else 1
    values = torch.arange(first, first + num_classes, device=labels.device)
    values = values.view(1, num_classes, *([1] * (labels.dim() - 1)))
    return (labels.unsqueeze(1) == values).float()


def _prepare(
    logits: torch.Tensor, labels: torch.Tensor, exclusive: bool, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check shapes and return float32 logits, cleaned labels, planes and a ``(B, 1, ...)`` mask.

    Labels outside the mask are replaced by 0 so that any value may sit there.
    """
    if logits.dim() < 3 or labels.shape != logits.shape[:1] + logits.shape[2:]:
        raise NumsnetError(
            f"Logits of shape {tuple(logits.shape)} do not match labels of shape "
            f"{tuple(labels.shape)}.",
            "Pass logits as (B, C, H, W) and labels as (B, H, W) with the same B, H and W.",
        )
    if mask is None:
        keep = torch.ones_like(labels, dtype=torch.bool)
    else:
        if mask.shape != labels.shape:
            raise NumsnetError(
                f"Mask of shape {tuple(mask.shape)} does not match labels of shape "
                f"{tuple(labels.shape)}.",
                "Pass a (B, H, W) mask with the shape of the label map.",
            )
        keep = mask.to(device=labels.device) > 0
    labels = torch.where(keep, labels, torch.zeros_like(labels))
    planes = one_hot_planes(labels, logits.shape[1], exclusive)
    return logits.float(), labels, planes, keep.unsqueeze(1)


def _probabilities(logits: torch.Tensor, exclusive: bool) -> torch.Tensor:
    """Softmax over channels (exclusive) or sigmoid per channel (independent)."""
    return torch.softmax(logits, dim=1) if exclusive else torch.sigmoid(logits)


def no_autocast(logits: torch.Tensor) -> torch.autocast:
    """A region where autocast is off on the device of ``logits``: losses compute in float32."""
    return torch.autocast(device_type=logits.device.type, enabled=False)


def dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    exclusive: bool,
    mask: torch.Tensor | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft Dice loss (paper eq. 9-10).

    ``1 - mean_c (2 |P_c ∩ G_c| + s) / (|P_c| + |G_c| + s)``, where ``P_c`` are the soft
    probabilities of channel ``c`` and ``G_c`` its binary plane, each summed over the
    batch and the counted pixels. For exclusive models the background channel is one of
    the classes of the mean.

    Parameters
    ----------
    logits
        ``(B, C, H, W)`` raw model output.
    labels
        ``(B, H, W)`` integer label map.
    exclusive
        Softmax over channels (``True``) or independent sigmoid planes (``False``).
    mask
        ``(B, H, W)`` bool or float, nonzero where the pixel counts; ``None``: all.
    smooth
        The smoothing ``s``; 1 as in the paper. A class with no probability mass and no
        reference pixel counts as a Dice of 1.

    Returns
    -------
    torch.Tensor
        Scalar float32.
    """
    with no_autocast(logits):
        logits, _, planes, keep = _prepare(logits, labels, exclusive, mask)
        return _soft_dice_loss(_probabilities(logits, exclusive), planes, keep, smooth)


def _soft_dice_loss(
    probs: torch.Tensor, planes: torch.Tensor, keep: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """``1 - mean_c soft Dice`` of probabilities and planes ``(B, C, ...)`` where ``keep``."""
    probs = torch.where(keep, probs, 0.0)
    planes = planes * keep
    dims = [0, *range(2, probs.dim())]
    intersection = (probs * planes).sum(dims)
    denominator = probs.sum(dims) + planes.sum(dims) + smooth
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    dice = torch.where(denominator > 0, (2 * intersection + smooth) / safe, 1.0)
    return 1.0 - dice.mean()


def _masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B, K, ...) over the counted pixels and the K channels; 0 if none."""
    keep = keep.expand_as(values)
    total = torch.where(keep, values, 0.0).sum()
    return total / keep.sum().clamp_min(1)


def bce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    exclusive: bool,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy on every class plane, mean over counted pixels and classes.

    Exclusive models use the softmax probabilities clamped to ``[1e-7, 1 - 1e-7]``;
    independent models use ``binary_cross_entropy_with_logits``.

    Parameters
    ----------
    logits, labels, exclusive, mask
        As in :func:`dice_loss`.

    Returns
    -------
    torch.Tensor
        Scalar float32.
    """
    with no_autocast(logits):
        logits, _, planes, keep = _prepare(logits, labels, exclusive, mask)
        if exclusive:
            probs = torch.softmax(logits, dim=1).clamp(_EPS, 1.0 - _EPS)
            values = -(planes * torch.log(probs) + (1.0 - planes) * torch.log1p(-probs))
        else:
            values = F.binary_cross_entropy_with_logits(logits, planes, reduction="none")
        return _masked_mean(values, keep)


def bdl_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    exclusive: bool,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE-Dice loss of the paper (eq. 8): ``bce / 2 + dice`` with smoothing 1.

    Parameters
    ----------
    logits, labels, exclusive, mask
        As in :func:`dice_loss`.

    Returns
    -------
    torch.Tensor
        Scalar float32.
    """
    return bce_loss(logits, labels, exclusive, mask) / 2 + dice_loss(
        logits, labels, exclusive, mask
    )


def ce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    exclusive: bool,
    mask: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Categorical cross-entropy, mean over counted pixels.

    Exclusive models: ``F.cross_entropy`` on the logits. Independent planes have no
    categorical distribution, so they fall back to :func:`bce_loss`.

    Parameters
    ----------
    logits, labels, exclusive, mask
        As in :func:`dice_loss`.
    class_weights
        ``(C,)`` weight of each class's pixels (exclusive models;
        :mod:`~napari_numsnet.engine.class_weights`); ``None``: 1 each.

    Returns
    -------
    torch.Tensor
        Scalar float32.
    """
    if not exclusive:
        return bce_loss(logits, labels, exclusive, mask)
    with no_autocast(logits):
        logits, labels, _, keep = _prepare(logits, labels, exclusive, mask)
        weight = None if class_weights is None else class_weights.to(logits.device, logits.dtype)
        values = F.cross_entropy(logits, labels, weight=weight, reduction="none").unsqueeze(1)
        return _masked_mean(values, keep)


def _weighted_nll(
    log_probs: torch.Tensor, planes: torch.Tensor, class_weights: torch.Tensor | None
) -> torch.Tensor:
    """``-w_y log p_y`` per pixel, ``(B, 1, ...)``, from one-hot ``planes``."""
    if class_weights is not None:
        shape = (1, -1) + (1,) * (planes.dim() - 2)
        planes = planes * class_weights.to(planes.device, planes.dtype).view(shape)
    return -(log_probs * planes).sum(1, keepdim=True)


def dice_ce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    exclusive: bool,
    mask: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dice + cross-entropy (nnU-Net's default): ``dice + ce``.

    The same value as ``dice_loss + ce_loss`` (and as MONAI's ``DiceCELoss`` with
    ``batch=True`` and smoothing 1) with the planes and the softmax computed once, so
    it costs little more than either term; independent planes fall back to the sum.

    Parameters
    ----------
    logits, labels, exclusive, mask
        As in :func:`dice_loss`.
    class_weights
        As in :func:`ce_loss`, for the cross-entropy term only.

    Returns
    -------
    torch.Tensor
        Scalar float32.
    """
    if not exclusive:
        return dice_loss(logits, labels, exclusive, mask) + ce_loss(
            logits, labels, exclusive, mask
        )
    with no_autocast(logits):
        logits, labels, planes, keep = _prepare(logits, labels, exclusive, mask)
        log_probs = torch.log_softmax(logits, dim=1)
        ce = _masked_mean(_weighted_nll(log_probs, planes, class_weights), keep)
        return _soft_dice_loss(log_probs.exp(), planes, keep) + ce


_LOSSES: dict[str, LossFn] = {
    "bdl": bdl_loss,
    "dice": dice_loss,
    "ce": ce_loss,
    "dice_ce": dice_ce_loss,
}


def get_loss(name: str) -> LossFn:
    """Return the loss called ``name``: ``bdl``, ``dice``, ``ce`` or ``dice_ce``.

    The returned callable has the signature ``(logits, labels, exclusive, mask=None)``.
    """
    try:
        return _LOSSES[name]
    except KeyError:
        raise NumsnetError(
            f"Unknown loss {name!r}.", f"Choose one of: {', '.join(sorted(_LOSSES))}."
        ) from None
