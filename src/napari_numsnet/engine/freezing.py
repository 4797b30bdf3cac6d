"""Layer freezing for fine-tuning: the first weighted layers the input meets stay fixed."""

from __future__ import annotations

import types

import torch
from torch import nn

from napari_numsnet.errors import NumsnetError
from napari_numsnet.models.base import ModelKind


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that hold weights themselves, in the order the input reaches them.

    The order is traced with a dummy forward pass, so it holds for any registry model:
    ``stem.body.0`` (conv), ``stem.body.1`` (BatchNorm), ... for DRSegUNet;
    ``encoders.0.0`` (conv), ``encoders.0.2`` (BatchNorm), ... for the UNet family.
    Modules the pass does not reach follow in registration order.
    """
    layers = {
        name: module
        for name, module in model.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    }
    order: list[str] = []
    hooks = [
        module.register_forward_pre_hook(lambda m, i, name=name: order.append(name))
        for name, module in layers.items()
    ]
    side = 2 * int(model.required_multiple)
    shape: tuple[int, ...] = (1, int(model.config.input_channels), side, side)
    if model.kind is ModelKind.VOLUME:
        shape = (*shape[:2], int(model.required_depth), side, side)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    called = list(dict.fromkeys(order))
    return [(n, layers[n]) for n in called] + [
        (n, m) for n, m in layers.items() if n not in called
    ]


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """``train()`` of a frozen BatchNorm: it stays in eval mode."""
    return self


def freeze_first_layers(model: nn.Module, n: int) -> list[str]:
    """Freeze the first ``n`` layers with weights of ``model`` in place.

    Their parameters get ``requires_grad = False``; a frozen BatchNorm is put in eval
    mode and its ``train()`` made a no-op, so its running statistics stay as they are.

    Returns
    -------
    list[str]
        The names of the frozen layers.

    Raises
    ------
    NumsnetError
        The model has fewer than ``n`` layers with weights.
    """
    layers = weighted_layers(model)
    if n > len(layers):
        raise NumsnetError(
            f"Cannot freeze {n} layers of a model with {len(layers)} layers with weights.",
            f"Use frozen_layers <= {len(layers)}.",
        )
    for _, module in layers[:n]:
        for param in module.parameters(recurse=False):
            param.requires_grad_(False)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = types.MethodType(_stay_in_eval, module)  # type: ignore[method-assign]
    return [name for name, _ in layers[:n]]
