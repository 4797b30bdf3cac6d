"""Ordered prediction of a whole stack, with the NUMSnet features carried across chunks.

Predicting a stack in chunks of any size gives the same result as one pass: the last
slice's node features of each chunk are carried into the next chunk.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_numsnet.config import PredictConfig, PreprocessConfig
from napari_numsnet.data.context import with_context
from napari_numsnet.data.preprocess import Preprocessor
from napari_numsnet.engine.device import amp_dtype, place_model, select_device
from napari_numsnet.engine.postprocess import keep_largest_component
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models.base import ModelKind


@dataclass
class Prediction:
    """A predicted stack at the original size.

    Attributes
    ----------
    labels
        ``(Z, H, W)`` uint8 (uint16 beyond 255 classes) label map.
    probabilities
        ``(C, Z, H, W)`` float32 class probabilities, or ``None`` if not asked for.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None


def _forward_sequence(
    model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Probabilities ``(Z, C, S, S)`` of ``images`` ``(Z, channels, S, S)`` in the given order."""
    exclusive = model.config.exclusive
    dtype = amp_dtype(device)
    outputs, carry = [], None
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size].to(device, non_blocking=True)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            out = model(chunk, carry)
        logits = out.logits.float()
        prob = torch.softmax(logits, dim=1) if exclusive else torch.sigmoid(logits)
        outputs.append(prob.cpu())
        carry = out.carry
    return torch.cat(outputs)


def predict_stack(
    model: nn.Module,
    images: np.ndarray,
    config: PredictConfig = PredictConfig(),
    device: torch.device | None = None,
    slices: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities of a preprocessed stack.

    Parameters
    ----------
    model
        A registry model.
    images
        ``(Z, S, S)`` float32, preprocessed slices in ascending stack order.
    config
        Direction of travel (forward, backward, or both averaged; ``None``: forward) and
        chunk size.
    device
        Device to run on; ``None`` chooses from ``config.device``.
    slices
        Slice models only: the indices of the slices to predict (their neighbours still
        come from ``images`` for 2.5D context); ``None``: every slice.

    Returns
    -------
    np.ndarray
        ``(C, Z, S, S)`` float32 probabilities (``(C, len(slices), S, S)``).
    """
    if images.ndim != 3 or len(images) == 0:
        raise NumsnetError(
            f"Expected a stack of slices (Z, H, W); got shape {images.shape}.",
            "Pass a 3D array with at least one slice.",
        )
    if config.batch_size < 1:
        raise NumsnetError(f"batch_size must be >= 1; got {config.batch_size}.", "Use 1 or more.")
    if config.mirror and model.kind is ModelKind.VOLUME:
        raise NumsnetError(
            "Test-time flips are for slice and sequence models.",
            "Predict the 3D model without them.",
        )
    device = device or select_device(config.device)
    was_training = model.training
    if model.kind is ModelKind.VOLUME:
        from napari_numsnet.engine.volumetric import predict_volumetric

        try:
            return predict_volumetric(model, images, device)
        finally:
            model.train(was_training)
    if slices is not None and model.kind is not ModelKind.SLICE:
        raise NumsnetError(
            f"A {model.kind.value} model predicts whole stacks, not chosen slices.",
            "Predict the whole stack and take the slices from the result.",
        )
    model = place_model(model, device).eval()
    stack = np.ascontiguousarray(images, dtype=np.float32)
    if model.config.context or slices is not None:
        x = torch.from_numpy(with_context(stack, model.config.context, slices))
    else:
        x = torch.from_numpy(stack)[:, None]
    directions = {"forward": [False], "backward": [True], "both": [False, True]}
    direction = config.direction or "forward"  # a bare model has no trained preference
    if direction not in directions:
        raise NumsnetError(f"Unknown direction {direction!r}.", "Use forward, backward or both.")
    if model.kind is not ModelKind.SEQUENCE:
        directions[direction] = [False]  # order does not matter: one pass is enough
    # Test-time flips: in-plane axes of (Z, C, H, W) flipped before and after a pass.
    flips: list[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)] if config.mirror else [()]
    total = None
    with torch.inference_mode():
        for backward in directions[direction]:
            ordered = x.flip(0) if backward else x
            for axes in flips:
                seq = ordered.flip(axes) if axes else ordered
                prob = _forward_sequence(model, seq, config.batch_size, device)
                prob = prob.flip(axes) if axes else prob
                prob = prob.flip(0) if backward else prob
                total = prob if total is None else total + prob
    assert total is not None
    passes = len(directions[direction]) * len(flips)
    model.train(was_training)
    return (total / passes).permute(1, 0, 2, 3).numpy().astype(np.float32, copy=False)


def probabilities_to_labels(
    probabilities: np.ndarray, exclusive: bool, threshold: float = 0.5
) -> np.ndarray:
    """Label map from class probabilities ``(C, ...)``.

    Exclusive classes: argmax (channel k is label k). Independent planes (paper eq. 3):
    the most probable plane among those at or above ``threshold``, label = plane + 1;
    0 where no plane reaches it.
    """
    if exclusive:
        labels = probabilities.argmax(axis=0)
    else:
        best = probabilities.argmax(axis=0)
        labels = np.where(probabilities.max(axis=0) >= threshold, best + 1, 0)
    dtype = np.uint8 if probabilities.shape[0] <= 255 else np.uint16
    return labels.astype(dtype)


def predict_volume(
    model: nn.Module,
    stack: np.ndarray,
    preprocess: PreprocessConfig,
    config: PredictConfig = PredictConfig(),
    slice_range: tuple[int, int] | None = None,
    return_probabilities: bool = True,
) -> Prediction:
    """Predict a raw stack at its original size.

    Parameters
    ----------
    model
        A trained registry model.
    stack
        ``(Z, H, W)`` raw intensities (HU for CT), stack axis first.
    preprocess
        The preprocessing the model was trained with (from its checkpoint).
    config
        Direction, chunk size, threshold, device, the classes reduced to their largest
        connected component (within ``slice_range`` when one is given).
    slice_range
        ``(start, stop)`` to predict only those slices (in order); others are 0.
    return_probabilities
        Also return the ``(C, Z, H, W)`` probabilities.

    Returns
    -------
    Prediction
    """
    if stack.ndim != 3:
        raise NumsnetError(
            f"Expected a stack (Z, H, W); got an array of shape {stack.shape}.",
            "Open the whole volume, not a single slice.",
        )
    start, stop = slice_range or (0, len(stack))
    if not 0 <= start < stop <= len(stack):
        raise NumsnetError(
            f"Slice range {start}..{stop} is outside the stack of {len(stack)} slices.",
            f"Choose 0 <= start < stop <= {len(stack)}.",
        )
    pre = Preprocessor(preprocess)
    # Normalise with the whole stack's statistics, as in training, then take the range
    # (a slice model with 2.5D context still sees the neighbours outside it).
    images = pre.prepare(stack)
    if model.kind is ModelKind.SLICE:
        prob = predict_stack(model, images, config, slices=np.arange(start, stop))
    else:
        prob = predict_stack(model, images[start:stop], config)
    prob_full = pre.restore_probabilities(prob, stack.shape[1:])
    labels_part = probabilities_to_labels(prob_full, model.config.exclusive, config.threshold)
    if config.largest_component:  # the labels only: the probabilities stay as predicted
        labels_part = keep_largest_component(labels_part, config.largest_component)
    labels = np.zeros(stack.shape, dtype=labels_part.dtype)
    labels[start:stop] = labels_part
    probabilities = None
    if return_probabilities:
        probabilities = np.zeros((prob_full.shape[0], *stack.shape), dtype=np.float32)
        probabilities[:, start:stop] = prob_full
    return Prediction(labels, probabilities)
