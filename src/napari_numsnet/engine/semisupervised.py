"""A semi-supervised term on the unannotated slices of the training stacks.

FixMatch (Sohn et al., 2020) on slices: the model labels a weakly augmented view of an
unannotated slice (the paper's affine only), keeps the pixels it is confident about, and
learns to give the same labels to a strongly augmented view of the same geometry (the
affine plus nnU-Net's intensity changes). No label of an unannotated slice is ever read:
the targets are the model's own predictions.

Two strong views: ``intensity``, nnU-Net's intensity changes (what FixMatch was first
measured with), and ``unimatch``, the strong view of UniMatch (Yang et al., 2023) for
medical slices: colour jitter (brightness and contrast x0.5-1.5, p 0.8), a Gaussian blur
(p 0.5) and CutMix, a box of another unannotated slice pasted in (p 0.5), its weak-view
pseudo-labels pasted with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_numsnet.config import StrongViewName
from napari_numsnet.data.augment import (
    colour_jitter,
    cutmix_boxes,
    gaussian_blur,
    random_affine,
    random_intensity,
)


def consistency_loss(
    model: nn.Module,
    unlabelled: torch.Tensor,
    generator: torch.Generator,
    confidence: float = 0.9,
    strong_view: StrongViewName = "intensity",
    patch_size: int = 0,
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
    strong_view
        ``intensity`` (nnU-Net's intensity changes) or ``unimatch`` (colour jitter, blur
        and CutMix between the unannotated slices of the batch).
    patch_size
        Side of the random patch the weak view is cut to (:attr:`TrainConfig.patch_size`;
        0: the whole slice); the strong view is made from the patch.

    Returns
    -------
    tuple[torch.Tensor, float]
        The cross-entropy of the strong view against the weak view's labels, averaged
        over the confident pixels (0 if none), and the share of pixels that were
        confident (a diagnostic in ``[0, 1]``).
    """
    placeholder = torch.zeros(unlabelled.shape[0], *unlabelled.shape[2:], dtype=torch.long)
    weak, _ = random_affine(
        unlabelled, placeholder.to(unlabelled.device), generator, size=patch_size
    )
    with torch.no_grad():
        probabilities = torch.softmax(model(weak, None).logits.float(), dim=1)
        top, pseudo = probabilities.max(dim=1)
        keep = top >= confidence
    strong = random_intensity(weak, generator)
    if strong_view == "unimatch":
        strong, pseudo, keep = unimatch_view(strong, pseudo, keep, generator)
    elif strong_view == "cutmix":
        strong, pseudo, keep = cutmix(strong, pseudo, keep, generator)
    logits = model(strong, None).logits.float()
    values = F.cross_entropy(logits, pseudo, reduction="none")
    share = float(keep.float().mean())
    if not bool(keep.any()):
        return logits.sum() * 0.0, share
    return values[keep].mean(), share


def unimatch_view(
    images: torch.Tensor,
    pseudo: torch.Tensor,
    keep: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """UniMatch's strong perturbation of a batch of slices and their pseudo-labels.

    Parameters
    ----------
    images
        ``(U, C, H, W)`` float normalised slices.
    pseudo, keep
        ``(U, H, W)`` long pseudo-labels and bool confidence mask of the same slices.
    generator
        Source of the perturbations.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor, torch.Tensor]
        The perturbed slices, and the pseudo-labels and mask that go with them: where a
        box of slice ``(i + 1) mod U`` is pasted into slice ``i``, its labels are too.
    """
    n = images.shape[0]
    images = colour_jitter(images, generator, probability=0.8, strength=0.5)
    sigma = torch.rand(n, generator=generator, device=generator.device) * 0.9 + 0.1
    blur = torch.rand(n, generator=generator, device=generator.device) < 0.5
    blur = blur.to(images.device).view(n, 1, 1, 1)
    images = torch.where(blur, gaussian_blur(images, sigma.to(images.device)), images)
    return cutmix(images, pseudo, keep, generator)


def cutmix(
    images: torch.Tensor,
    pseudo: torch.Tensor,
    keep: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste a box of slice ``(i + 1) mod U`` into slice ``i`` (probability 1/2 a slice),
    its pseudo-labels and confidence mask with it; shapes as :func:`unimatch_view`'s."""
    n = images.shape[0]
    if n < 2:
        return images, pseudo, keep
    boxes = cutmix_boxes(n, images.shape[2], images.shape[3], generator, probability=0.5)
    boxes = boxes.to(images.device)
    other = torch.roll(torch.arange(n, device=images.device), -1)
    images = torch.where(boxes[:, None], images[other], images)
    pseudo = torch.where(boxes, pseudo[other], pseudo)
    keep = torch.where(boxes, keep[other], keep)
    return images, pseudo, keep
