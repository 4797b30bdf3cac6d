"""One optimiser step of a training run: augment, forward, loss, backward, update."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from napari_numsnet.config import TrainConfig
from napari_numsnet.data.augment import random_affine_patch, random_intensity
from napari_numsnet.engine.batches import Batch
from napari_numsnet.engine.output_loss import supervised_loss
from napari_numsnet.engine.semisupervised import consistency_loss
from napari_numsnet.errors import NumsnetError


@dataclass
class StepSetup:
    """What every optimiser step of a run shares."""

    loss_fn: Callable[..., torch.Tensor]
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    device: torch.device
    generator: torch.Generator
    exclusive: bool
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None


def train_step(
    model: nn.Module, batch: Batch, setup: StepSetup, unsupervised_weight: float = 0.0
) -> float:
    """One optimiser step on ``batch``; returns the loss.

    2D batches are augmented on the device: the paper's affine (one transform for a run
    of consecutive slices, one per slice otherwise) and, with ``patch_size``, a random
    patch of each, then nnU-Net's intensity changes.
    The loss counts only the pixels of ``batch.mask``; with ``unsupervised_weight`` and
    unannotated slices in the batch, FixMatch's consistency term is added.
    """
    config, device, generator = setup.config, setup.device, setup.generator
    images = batch.images.to(device, non_blocking=True)
    labels = batch.labels.to(device, non_blocking=True)
    mask = None if batch.mask is None else batch.mask.to(device, non_blocking=True)
    if config.augment and not batch.volumetric:  # 3D sub-volumes are not augmented
        rotation, zoom = config.affine_ranges(run=batch.ordered)
        images, labels, mask = random_affine_patch(
            images,
            labels,
            mask,
            generator,
            same_for_batch=batch.ordered,
            rotation=rotation,
            zoom=zoom,
            mirror=config.mirror,
            size=config.patch_size,
        )
        if config.intensity_augment:
            images = random_intensity(images, generator, same_for_batch=batch.ordered)
    dtype, scaler, optimizer = setup.dtype, setup.scaler, setup.optimizer
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with autocast:
        out = model(images, None)
        loss = supervised_loss(setup.loss_fn, out, labels, setup.exclusive, mask)
        if unsupervised_weight > 0 and batch.unlabelled is not None:
            unlabelled = batch.unlabelled.to(device, non_blocking=True)
            patch = config.patch_size if config.augment else 0
            term, _ = consistency_loss(
                model, unlabelled, generator, config.confidence, config.strong_view, patch
            )
            loss = loss + unsupervised_weight * term
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NumsnetError(
            f"The training loss became {value}.",
            "Lower the learning rate, or check the image for extreme values.",
        )
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return value
