"""Training and prediction of 3D models (MSDS-UNet) on a partly annotated stack.

With about 10% of the slices annotated, a 3D model still sees whole sub-volumes: each
training sample is a window of ``depth`` consecutive slices around an annotated slice,
and a per-slice mask keeps the unannotated slices out of the loss. Prediction slides the
window along the stack (half-overlapping) and averages the probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_numsnet.data.dataset import StackSample
from napari_numsnet.errors import NumsnetError

#: A whole stack with its annotated slices (the name 3D code has always used).
VolumeSample = StackSample


@dataclass(eq=False)
class VolumeBatch:
    """Sub-volumes: images ``(B, 1, D, S, S)``, labels and mask ``(B, D, S, S)``."""

    images: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    stack: int = -1
    continues: bool = False


def window_depth(model: nn.Module, n_slices: int, depth: int = 16) -> int:
    """Sub-volume depth: ``depth`` rounded up to what the model's pooling needs."""
    multiple = int(model.required_depth)
    depth = min(depth, max(n_slices, multiple))
    return max(multiple, math.ceil(depth / multiple) * multiple)


def _window(sample: VolumeSample, start: int, depth: int) -> tuple[np.ndarray, ...]:
    """Slices ``start .. start + depth`` (padded past the end with the minimum and no mask)."""
    z = len(sample.images)
    stop = min(z, start + depth)
    images = np.full((depth, *sample.images.shape[1:]), sample.images.min(), np.float32)
    labels = np.zeros((depth, *sample.labels.shape[1:]), np.int64)
    mask = np.zeros(depth, bool)
    images[: stop - start] = sample.images[start:stop]
    labels[: stop - start] = sample.labels[start:stop]
    mask[: stop - start] = sample.annotated[start:stop]
    return images, labels, mask


def iter_subvolumes(
    samples: Sequence[VolumeSample], depth: int, batch_size: int, generator: torch.Generator
) -> Iterator[VolumeBatch]:
    """One epoch: a window around each annotated slice (random offset), shuffled, batched."""
    centres = [(i, int(z)) for i, s in enumerate(samples) for z in np.flatnonzero(s.annotated)]
    if not centres:
        raise NumsnetError("There is no annotated slice to train on.", "Annotate a slice.")
    order = torch.randperm(len(centres), generator=generator).tolist()
    for first in range(0, len(order), batch_size):
        parts = []
        for k in order[first : first + batch_size]:
            index, z = centres[k]
            n = len(samples[index].images)
            low, high = max(0, z - depth + 1), max(0, min(z, n - depth))
            start = low + int(torch.randint(0, max(1, high - low + 1), (1,), generator=generator))
            parts.append(_window(samples[index], min(start, z), depth))
        images, labels, mask = (np.stack(p) for p in zip(*parts, strict=True))
        shape = labels.shape
        yield VolumeBatch(
            torch.from_numpy(images)[:, None],
            torch.from_numpy(labels),
            torch.from_numpy(np.broadcast_to(mask[:, :, None, None], shape).copy()),
        )


def count_subvolume_batches(samples: Sequence[VolumeSample], batch_size: int) -> int:
    """Batches per epoch of :func:`iter_subvolumes`."""
    return math.ceil(sum(len(s) for s in samples) / batch_size)


def predict_volumetric(
    model: nn.Module, images: np.ndarray, device: torch.device, depth: int = 16
) -> np.ndarray:
    """Probabilities ``(C, Z, S, S)`` of a preprocessed stack ``(Z, S, S)``.

    Half-overlapping windows of ``depth`` slices; each slice's probabilities are the mean
    over the windows that contain it.
    """
    model = model.to(device).eval()
    z = len(images)
    depth = window_depth(model, z, depth)
    starts = list(range(0, max(1, z - depth + 1), max(1, depth // 2)))
    if starts[-1] + depth < z:
        starts.append(z - depth)
    sample = VolumeSample(images, np.zeros(images.shape, np.int64), np.zeros(z, bool))
    total, count = None, np.zeros(z, np.float32)
    with torch.inference_mode():
        for start in starts:
            window, _, _ = _window(sample, start, depth)
            logits = model(torch.from_numpy(window)[None, None].to(device)).logits.float()
            exclusive = model.config.exclusive
            prob = (F.softmax(logits, 1) if exclusive else torch.sigmoid(logits))[0].cpu().numpy()
            stop = min(z, start + depth)
            if total is None:
                total = np.zeros((prob.shape[0], *images.shape), np.float32)
            total[:, start:stop] += prob[:, : stop - start]
            count[start:stop] += 1
    assert total is not None
    return total / count[None, :, None, None]
