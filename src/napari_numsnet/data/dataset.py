"""Annotated slices of stacks as training batches, ordered or shuffled.

NUMSnet carries features from slice to slice, so it trains on ordered sequences: the
annotated slices of one stack in ascending order, cut into consecutive batches. The
other models train on slices shuffled across all stacks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_numsnet.errors import NumsnetError


@dataclass(eq=False)
class TrainingStack:
    """The annotated slices of one stack, preprocessed.

    Parameters
    ----------
    images
        ``(N, S, S)`` float32, normalised network input.
    labels
        ``(N, S, S)`` int64 labels.
    slice_index
        ``(N,)`` ascending positions of the slices in the source stack.
    name
        Name of the stack, for messages.
    """

    images: np.ndarray
    labels: np.ndarray
    slice_index: np.ndarray
    name: str = "stack"

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.slice_index = np.asarray(self.slice_index, dtype=np.int64)
        n = self.images.shape[0] if self.images.ndim == 3 else -1
        if (
            self.images.ndim != 3
            or self.labels.shape != self.images.shape
            or self.slice_index.shape != (n,)
        ):
            raise NumsnetError(
                f"Stack {self.name!r}: images {self.images.shape}, labels "
                f"{self.labels.shape} and slice_index {self.slice_index.shape} do not fit.",
                "Give images and labels as (N, S, S) and one slice index per slice.",
            )
        if np.any(np.diff(self.slice_index) <= 0):
            raise NumsnetError(
                f"Stack {self.name!r}: slice indices {self.slice_index.tolist()} are not "
                "strictly ascending.",
                "Sort the slices by their position in the stack.",
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(eq=False)
class StackSample:
    """A whole preprocessed stack with the slices that count.

    Every model kind trains from this: slice models read the annotated slices, the NUMSnet
    family runs of consecutive slices around them, 3D models windows; unannotated slices
    may feed a semi-supervised term but never a supervised loss.

    Attributes
    ----------
    images
        ``(Z, S, S)`` float32 preprocessed slices, in stack order.
    labels
        ``(Z, S, S)`` int64; read only on annotated slices.
    annotated
        ``(Z,)`` bool, the slices that enter the loss (or the score, for validation).
    name
        For messages.
    """

    images: np.ndarray
    labels: np.ndarray
    annotated: np.ndarray
    name: str = "stack"

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.annotated = np.asarray(self.annotated, dtype=bool)
        z = self.images.shape[0] if self.images.ndim == 3 else -1
        if (
            self.images.ndim != 3
            or self.labels.shape != self.images.shape
            or (self.annotated.shape != (z,))
        ):
            raise NumsnetError(
                f"Stack {self.name!r}: images {self.images.shape}, labels "
                f"{self.labels.shape} and annotated {self.annotated.shape} do not fit.",
                "Give images and labels as (Z, S, S) and one annotated flag per slice.",
            )

    def __len__(self) -> int:
        """Number of annotated slices."""
        return int(np.count_nonzero(self.annotated))

    @property
    def slice_index(self) -> np.ndarray:
        """``(N,)`` ascending positions of the annotated slices."""
        return np.flatnonzero(self.annotated)


def as_stack_sample(stack: StackSample | TrainingStack) -> StackSample:
    """``stack`` as a :class:`StackSample`; a TrainingStack's slices all count."""
    if isinstance(stack, StackSample):
        return stack
    return StackSample(stack.images, stack.labels, np.ones(len(stack), bool), stack.name)


@dataclass(eq=False)
class Batch:
    """One training batch.

    Parameters
    ----------
    images
        ``(B, 1, S, S)`` float32 tensor (CPU).
    labels
        ``(B, S, S)`` long tensor (CPU).
    stack
        Index of the stack in the list the batches came from; -1 when shuffled.
    continues
        ``True`` when this batch directly follows the previous batch of the same stack
        in an ordered pass, so a sequential model may carry its state over.
    """

    images: torch.Tensor
    labels: torch.Tensor
    stack: int
    continues: bool


def _check(stacks: Sequence[TrainingStack], batch_size: int) -> None:
    if batch_size < 1:
        raise NumsnetError(
            f"Batch size {batch_size} is below 1.", "Use a batch size of 1 or more."
        )
    if len(stacks) == 0:
        raise NumsnetError("There is no stack to train on.", "Add at least one stack.")
    for stack in stacks:
        if len(stack) == 0:
            raise NumsnetError(
                f"Stack {stack.name!r} has no annotated slice.",
                "Annotate at least one slice of it, or leave it out.",
            )


def count_batches(stacks: Sequence[TrainingStack], batch_size: int, ordered: bool) -> int:
    """Number of batches ``iter_batches`` yields with the same arguments."""
    _check(stacks, batch_size)
    if ordered:
        return sum(-(-len(s) // batch_size) for s in stacks)
    return -(-sum(len(s) for s in stacks) // batch_size)


def _batch(stack: TrainingStack, rows: np.ndarray, index: int, continues: bool) -> Batch:
    return Batch(
        images=torch.from_numpy(np.ascontiguousarray(stack.images[rows]))[:, None],
        labels=torch.from_numpy(np.ascontiguousarray(stack.labels[rows])),
        stack=index,
        continues=continues,
    )


def _permutation(n: int, generator: torch.Generator) -> np.ndarray:
    return torch.randperm(n, generator=generator, device=generator.device).cpu().numpy()


def iter_batches(
    stacks: Sequence[TrainingStack],
    batch_size: int,
    ordered: bool,
    generator: torch.Generator,
) -> Iterator[Batch]:
    """Yield the batches of one epoch.

    Parameters
    ----------
    stacks
        Annotated stacks, each with at least one slice, all with the same slice size.
    batch_size
        Slices per batch (the last batch of a stack, or of the epoch, may be shorter).
    ordered
        ``True``: stacks in random order, each stack's slices in ascending order cut
        into consecutive batches; ``continues`` is ``False`` on a stack's first batch.
        ``False``: the slices of all stacks shuffled together; ``stack`` is -1 and
        ``continues`` is ``False``.
    generator
        Source of the random order; the same seed gives the same epoch.

    Yields
    ------
    Batch
        Images ``(B, 1, S, S)`` float32 and labels ``(B, S, S)`` long, on the CPU.
    """
    _check(stacks, batch_size)
    if ordered:
        for index in _permutation(len(stacks), generator).tolist():
            stack = stacks[index]
            for start in range(0, len(stack), batch_size):
                rows = np.arange(start, min(start + batch_size, len(stack)))
                yield _batch(stack, rows, index, continues=start > 0)
        return
    owners = np.concatenate([np.full(len(s), i) for i, s in enumerate(stacks)])
    rows = np.concatenate([np.arange(len(s)) for s in stacks])
    order = _permutation(len(rows), generator)
    for start in range(0, len(order), batch_size):
        pick = order[start : start + batch_size]
        images = np.stack([stacks[owners[p]].images[rows[p]] for p in pick])
        labels = np.stack([stacks[owners[p]].labels[rows[p]] for p in pick])
        yield Batch(
            images=torch.from_numpy(images)[:, None],
            labels=torch.from_numpy(labels),
            stack=-1,
            continues=False,
        )


def validate_pair(
    image: np.ndarray, labels: np.ndarray, num_classes: int, exclusive: bool
) -> None:
    """Check that a label stack fits an image stack and a number of classes.

    Parameters
    ----------
    image
        ``(Z, H, W)`` image stack.
    labels
        ``(Z, H, W)`` labels: 0 background, ``k`` the ``k``-th class.
    num_classes
        Output channels of the model (``ModelConfig.num_classes``).
    exclusive
        ``True``: channel 0 is the background, so labels lie in ``0..num_classes-1``.
        ``False``: channel ``k`` is label ``k + 1``, so labels lie in ``0..num_classes``.

    Raises
    ------
    NumsnetError
        Shapes differ, labels are not integers, negative, or above the largest class.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.shape != labels.shape:
        raise NumsnetError(
            f"The image stack has shape {image.shape} but the labels have {labels.shape}.",
            "Use labels drawn on this very image (same number of slices, rows, columns).",
        )
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
        whole = np.issubdtype(labels.dtype, np.floating) and bool(
            np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))
        )
        if not whole:
            raise NumsnetError(
                f"The labels hold non-integer values (dtype {labels.dtype}).",
                "Use an integer label image (0 = background, 1, 2, ... = classes).",
            )
    values = np.unique(labels).astype(np.int64) if labels.size else np.zeros(0, np.int64)
    negative = values[values < 0]
    if negative.size:
        raise NumsnetError(
            f"The labels hold negative values {negative.tolist()}.",
            "Relabel them to 0 (background) or to a class number 1, 2, ...",
        )
    if num_classes < 1:
        raise NumsnetError(
            f"num_classes={num_classes} is below 1.", "Give the number of model outputs."
        )
    highest = num_classes - 1 if exclusive else num_classes
    above = values[values > highest]
    if above.size:
        kind = "exclusive" if exclusive else "independent"
        raise NumsnetError(
            f"The labels hold values {above.tolist()} but {num_classes} {kind} classes "
            f"allow only 0..{highest}.",
            f"Raise num_classes to {int(above.max()) + (1 if exclusive else 0)}, or relabel "
            "those values.",
        )
