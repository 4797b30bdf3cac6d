"""A semi-supervised term on the unannotated slices of the training stacks.

FixMatch (Sohn et al., 2020) on slices: the model labels a weakly augmented view of an
unannotated slice (the paper's affine only), keeps the pixels it is confident about, and
learns to give the same labels to a strongly augmented view of the same geometry (the
affine plus nnU-Net's intensity changes). No label of an unannotated slice is ever read:
the targets are the model's own predictions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_numsnet.data.augment import random_affine, random_intensity


def consistency_loss(
    model: nn.Module,
    unlabelled: torch.Tensor,
    generator: torch.Generator,
    confidence: float = 0.9,
) -> tuple[torch.Tensor, float]:
    """FixMatch's unsupervised loss on a batch of unannotated slices.

    Parameters
    ----------
    model
        A slice model with exclusive (softmax) classes (the caller checks), in training
        mode; it may be wrapped in DistributedDataParallel.
    unlabelled
        ``(U, C, S, S)`` float32 normalised slices (``C > 1``: with 2.5D context), on
        the model's device.
    generator
        Source of the augmentations.
    confidence
        Pixels whose top probability on the weak view is below this are left out.

    Returns
    -------
    tuple[torch.Tensor, float]
        The cross-entropy of the strong view against the weak view's labels, averaged
        over the confident pixels (0 if none), and the share of pixels that were
        confident (a diagnostic in ``[0, 1]``).
    """
    placeholder = torch.zeros(unlabelled.shape[0], *unlabelled.shape[2:], dtype=torch.long)
    weak, _ = random_affine(unlabelled, placeholder.to(unlabelled.device), generator)
    with torch.no_grad():
        probabilities = torch.softmax(model(weak, None).logits.float(), dim=1)
        top, pseudo = probabilities.max(dim=1)
        keep = top >= confidence
    strong = random_intensity(weak, generator)
    logits = model(strong, None).logits.float()
    values = F.cross_entropy(logits, pseudo, reduction="none")
    share = float(keep.float().mean())
    if not bool(keep.any()):
        return logits.sum() * 0.0, share
    return values[keep].mean(), share
