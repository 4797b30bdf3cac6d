"""Batch sources: how each kind of model sees a partly annotated stack during training.

One interface, three sources, chosen by the model's kind (``models.base.ModelKind``):

- :class:`SliceSource` (slice models): the annotated slices of every stack, shuffled
  together; optionally a few unannotated slices per batch for a semi-supervised term.
- :class:`SequenceSource` (the NUMSnet family): contiguous runs of a stack, annotated
  slices *and* their unannotated neighbours in stack order, with a per-slice loss mask,
  so that the slice fusion learns from the neighbours it sees at inference. Each annotated
  slice is the target of one run per epoch, at a random position inside the run.
- :class:`SubvolumeSource` (3D models): windows of consecutive slices around the
  annotated ones with the same mask.

Every source yields :class:`Batch` records and says how many steps one epoch takes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from napari_numsnet.data.context import with_context
from napari_numsnet.data.dataset import StackSample, TrainingStack, as_stack_sample
from napari_numsnet.engine.volumetric import iter_subvolumes
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models.base import ModelKind


@dataclass(eq=False)
class Batch:
    """One training batch, on the CPU.

    Attributes
    ----------
    images
        ``(B, C, S, S)`` float32, ``C = 2 * context + 1`` (``(B, 1, D, S, S)`` for
        sub-volumes).
    labels
        ``(B, S, S)`` long (``(B, D, S, S)``); read only where ``mask`` is set.
    mask
        Same shape as ``labels``, bool: the pixels that enter the loss; ``None``: all.
    ordered
        ``True``: the batch is one run of consecutive slices in stack order (one
        geometry for the whole batch: augment it with a single transform).
    unlabelled
        ``(U, C, S, S)`` float32 unannotated slices for a semi-supervised term, or
        ``None``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor | None = None
    ordered: bool = False
    unlabelled: torch.Tensor | None = None

    @property
    def annotated_slices(self) -> int:
        """Slices of the batch that enter the loss."""
        if self.mask is None:
            return int(self.labels.shape[0] * (self.labels.shape[1] if self.volumetric else 1))
        dims = tuple(range(2 if self.volumetric else 1, self.mask.dim()))
        return int(self.mask.any(dim=dims).sum()) if dims else int(self.mask.sum())

    @property
    def volumetric(self) -> bool:
        """``True`` for sub-volumes ``(B, 1, D, S, S)``."""
        return self.images.dim() == 5


class BatchSource(Protocol):
    """What :func:`~napari_numsnet.engine.trainer.fit` asks of its training data."""

    batch_size: int

    def steps_per_epoch(self) -> int:
        """Batches one call of :meth:`epoch` yields."""
        ...

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        """The batches of one epoch, drawn with ``generator``."""
        ...


def _permutation(n: int, generator: torch.Generator) -> np.ndarray:
    return torch.randperm(n, generator=generator).numpy()


def _check(samples: Sequence[StackSample]) -> None:
    if not samples:
        raise NumsnetError("There is no stack to train on.", "Add at least one stack.")
    for sample in samples:
        if len(sample) == 0:
            raise NumsnetError(
                f"Stack {sample.name!r} has no annotated slice.",
                "Annotate at least one slice of it, or leave it out.",
            )


class SliceSource:
    """Annotated slices of all stacks, shuffled together (slice models).

    Parameters
    ----------
    stacks
        Whole stacks with their annotated slices, or annotated slices only.
    batch_size
        Annotated slices per batch (the epoch's last batch may be shorter).
    unlabelled_per_batch
        Unannotated slices drawn at random per batch into ``Batch.unlabelled`` (0: none).
    context
        2.5D input: neighbouring slices on each side given as extra channels
        (:func:`~napari_numsnet.data.context.with_context`); 0: the slice alone.
    """

    def __init__(
        self,
        stacks: Sequence[StackSample | TrainingStack],
        batch_size: int,
        unlabelled_per_batch: int = 0,
        context: int = 0,
    ) -> None:
        if context and any(isinstance(s, TrainingStack) for s in stacks):
            raise NumsnetError(
                "2.5D context needs whole stacks: a TrainingStack holds only the annotated "
                "slices, not their neighbours.",
                "Pass StackSample records (the whole stack with its annotated slices), "
                "or set the context to 0.",
            )
        self.samples = [as_stack_sample(s) for s in stacks]
        _check(self.samples)
        self.batch_size = batch_size
        self.unlabelled_per_batch = unlabelled_per_batch
        self.context = context
        self._annotated = [
            (i, int(z)) for i, s in enumerate(self.samples) for z in np.flatnonzero(s.annotated)
        ]
        self._unannotated = [
            (i, int(z)) for i, s in enumerate(self.samples) for z in np.flatnonzero(~s.annotated)
        ]

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self._annotated) / self.batch_size)

    def _images(self, picks: Sequence[tuple[int, int]]) -> torch.Tensor:
        stacked = np.concatenate(
            [with_context(self.samples[i].images, self.context, [z]) for i, z in picks]
        )
        return torch.from_numpy(stacked)

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        order = _permutation(len(self._annotated), generator)
        for first in range(0, len(order), self.batch_size):
            picks = [self._annotated[k] for k in order[first : first + self.batch_size]]
            labels = np.stack([self.samples[i].labels[z] for i, z in picks])
            unlabelled = None
            if self.unlabelled_per_batch and self._unannotated:
                draw = torch.randint(
                    len(self._unannotated), (self.unlabelled_per_batch,), generator=generator
                ).tolist()
                unlabelled = self._images([self._unannotated[k] for k in draw])
            yield Batch(self._images(picks), torch.from_numpy(labels), unlabelled=unlabelled)


class SequenceSource:
    """Runs of consecutive slices around each annotated slice (the NUMSnet family).

    A run holds ``run_length`` consecutive slices of one stack in ascending order; the
    annotated slice it is drawn for sits at a random position inside it (a new draw every
    epoch), other annotated slices that fall into the run count too, and the unannotated
    ones are seen by the slice fusion but kept out of the loss by the mask. Only the
    run's first slice is fused with itself, as the first slice of a stack is at inference.
    With ``reverse`` each run is given in descending order with probability 1/2, so the
    fusion learns to carry features downwards as well as upwards (pair it with
    ``PredictConfig.direction="both"``).

    Parameters
    ----------
    stacks
        Whole stacks with their annotated slices (annotated slices only also work: the
        runs are then runs of annotated slices, as in the paper).
    run_length
        Slices per run (the batch size); a shorter stack gives a shorter run.
    reverse
        Reverse each run's order with probability 1/2.
    """

    def __init__(
        self,
        stacks: Sequence[StackSample | TrainingStack],
        run_length: int,
        reverse: bool = False,
    ) -> None:
        self.samples = [as_stack_sample(s) for s in stacks]
        _check(self.samples)
        self.batch_size = run_length
        self.reverse = reverse
        self._targets = [
            (i, int(z)) for i, s in enumerate(self.samples) for z in np.flatnonzero(s.annotated)
        ]

    def steps_per_epoch(self) -> int:
        return len(self._targets)

    def run_bounds(self, index: int, z: int, generator: torch.Generator) -> tuple[int, int]:
        """``(start, stop)`` of a run of stack ``index`` containing slice ``z``."""
        n = len(self.samples[index].images)
        length = min(self.batch_size, n)
        low, high = max(0, z - length + 1), min(z, n - length)
        start = low + int(torch.randint(0, high - low + 1, (1,), generator=generator))
        return start, start + length

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        for k in _permutation(len(self._targets), generator).tolist():
            index, z = self._targets[k]
            start, stop = self.run_bounds(index, z, generator)
            sample = self.samples[index]
            run = np.arange(start, stop)
            if self.reverse and bool(torch.rand(1, generator=generator) < 0.5):
                run = run[::-1]
            images = torch.from_numpy(sample.images[run])[:, None]  # indexing copies
            labels = torch.from_numpy(sample.labels[run])
            annotated = torch.from_numpy(sample.annotated[run])
            mask = annotated[:, None, None].expand_as(labels).clone()
            yield Batch(images, labels, mask=mask, ordered=True)


class SubvolumeSource:
    """Windows of ``depth`` consecutive slices around the annotated ones (3D models).

    Parameters
    ----------
    stacks
        Whole stacks with their annotated slices.
    batch_size
        Sub-volumes per batch.
    depth
        Slices per window (see :func:`~napari_numsnet.engine.volumetric.window_depth`).
    """

    def __init__(self, stacks: Sequence[StackSample], batch_size: int, depth: int) -> None:
        self.samples = [as_stack_sample(s) for s in stacks]
        _check(self.samples)
        self.batch_size = batch_size
        self.depth = depth

    def steps_per_epoch(self) -> int:
        return math.ceil(sum(len(s) for s in self.samples) / self.batch_size)

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        for batch in iter_subvolumes(self.samples, self.depth, self.batch_size, generator):
            yield Batch(batch.images, batch.labels, mask=batch.mask)


def annotated_count(stacks: Sequence[StackSample | TrainingStack]) -> int:
    """Annotated slices over all ``stacks``."""
    return sum(len(s) for s in stacks)


def unannotated_count(stacks: Sequence[StackSample | TrainingStack]) -> int:
    """Unannotated slices over all ``stacks`` (a :class:`TrainingStack` holds none)."""
    return sum(int((~s.annotated).sum()) for s in stacks if isinstance(s, StackSample))


def make_source(
    kind: ModelKind,
    stacks: Sequence[StackSample | TrainingStack],
    batch_size: int,
    depth: int = 16,
    unlabelled_per_batch: int = 0,
    context: int = 0,
    reverse_runs: bool = False,
) -> BatchSource:
    """The batch source for a model of ``kind``.

    ``batch_size`` is clamped to the number of annotated slices for slice and 3D models
    (a stack with 3 annotated slices trains with batches of 3, not an error); for the
    NUMSnet family it is the run length, clamped by each stack's length. ``context``
    (2.5D input) is for slice models only, ``reverse_runs`` for the NUMSnet family only.
    """
    n = annotated_count(stacks)
    if n == 0:
        raise NumsnetError(
            "There is no annotated slice to train on.",
            "Paint at least one slice (or mark an empty slice as done) before training.",
        )
    if batch_size < 1:
        raise NumsnetError(
            f"Batch size {batch_size} is below 1.", "Use a batch size of 1 or more."
        )
    if kind is ModelKind.SEQUENCE:
        return SequenceSource(stacks, batch_size, reverse_runs)
    if kind is ModelKind.VOLUME:
        samples = [as_stack_sample(s) for s in stacks]
        return SubvolumeSource(samples, min(batch_size, n), depth)
    return SliceSource(stacks, min(batch_size, n), unlabelled_per_batch, context)
