"""Frozen configuration records shared by the core, the command line and the widgets.

Standard library only: every other module imports from here, this module imports
nothing of the package. Each record converts to and from a plain ``dict`` so that it
can be stored in a checkpoint or a JSON file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

Normalization = Literal["minmax", "zscore", "none"]
SliceStrategy = Literal["initial_seq", "mid_seq", "mid_rand", "spread"]
Direction = Literal["forward", "backward", "both"]
LossName = Literal["bdl", "dice", "ce", "dice_ce"]
ScheduleName = Literal["constant", "cosine", "poly"]
OptimizerName = Literal["adam", "adamw"]
StrongViewName = Literal["intensity", "unimatch", "cutmix"]
ClassWeightsName = Literal["none", "frequency"]

T = TypeVar("T")


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from ``data``, turning lists back into tuples, ignoring unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return cls(**kwargs)


class _Record:
    """Mixin: ``to_dict`` / ``from_dict`` / ``replace`` for the frozen records."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        return _from_dict(cls, data)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


#: The model a new training of CT in Hounsfield units uses unless told otherwise (and
#: the demo's). DRSegUNet rather than NUMSnet or UNet: in the few-shot benchmarks
#: (``benchmarks/README.md``) it is the most accurate per minute on the CT sample (0.891
#: against UNet's 0.853 from 3 slices, 0.942 against 0.935 from 9). NUMSnet needs
#: several consecutive annotated slices per stack to learn its slice-to-slice fusion;
#: choose it for long stacks.
DEFAULT_MODEL = "drsegunet"
#: ... and of every other image (MRI, 8-bit or normalised data): the plain UNet, which
#: on ACDC (148 annotated MRI slices) ends 0.014 ± 0.005 per volume above DRSegUNet in
#: less time (3 of 3 seeds) and 0.026 above MONAI's UNet.
DEFAULT_MODEL_NOT_HU = "unet"


@dataclass(frozen=True)
class ModelConfig(_Record):
    """What network to build.

    Parameters
    ----------
    name
        Registry name: ``unet``, ``wunet``, ``unetpp``, ``numsnet``, ``nums_all``,
        ``drsegunet``.
    in_channels
        Channels of one input slice (1 for CT and MRI).
    num_classes
        Output channels of the head. With ``exclusive=True`` channel 0 is the
        background and channel ``k`` is label value ``k``; with ``exclusive=False``
        channel ``k`` is the binary plane of label value ``k + 1``.
    widths
        Filters per depth; ``None`` takes the paper's widths for the model.
    exclusive
        ``True``: classes exclude each other (softmax, label map by argmax).
        ``False``: independent binary planes (sigmoid, threshold), as in the papers.
    deep_supervision
        UNet++ family only: extra 1x1 heads on the nested nodes of depth 1.
    dropout
        Dropout rate on the two deepest encoder nodes.
    context
        2.5D input, slice models only: this many neighbouring slices on each side of a
        slice are given to the network as extra channels (the stack's first and last
        slices repeated past its ends). 0: the slice alone, as in the papers.
    """

    name: str = DEFAULT_MODEL
    in_channels: int = 1
    num_classes: int = 3
    widths: tuple[int, ...] | None = None
    exclusive: bool = True
    deep_supervision: bool = False
    dropout: float = 0.5
    context: int = 0

    @property
    def input_channels(self) -> int:
        """Channels of the network's input: ``in_channels * (2 * context + 1)``."""
        return self.in_channels * (2 * self.context + 1)


@dataclass(frozen=True)
class PreprocessConfig(_Record):
    """How raw slices become network input.

    Parameters
    ----------
    window
        Intensity window ``(low, high)`` applied first (HU for CT), or ``None``.
    clip_percentiles
        ``(low, high)`` percentiles (0-100) of the stack its intensities are clipped to
        before normalisation, or ``None``. MRI has no fixed scale, and a few bright
        voxels (fat, flow artefacts) would otherwise squeeze the tissue into a small
        part of [0, 1], by a factor that differs from stack to stack. Off by default:
        ``(0.5, 99.5)`` cost 0.02 Dice on ACDC (``benchmarks/README.md``).
    normalization
        ``minmax`` (paper eq. 1, to [0, 1]), ``zscore`` or ``none``.
    size
        Side of the square slice the network sees (pixels); slices are resized to it and
        predictions resized back. ``None`` keeps the native size, padded to a multiple
        of 16.
    """

    window: tuple[float, float] | None = None
    clip_percentiles: tuple[float, float] | None = None
    normalization: Normalization = "minmax"
    size: int | None = 256


@dataclass(frozen=True)
class SamplingConfig(_Record):
    """Which slices of a stack to annotate (NUMSnet paper, section on training data).

    Parameters
    ----------
    strategy
        ``spread`` (the default: the slices cover the whole stack, see
        ``benchmarks/README.md``), or the paper's ``initial_seq``, ``mid_seq``, ``mid_rand``
        (its best).
    fraction
        Fraction of the stack's slices to annotate for training.
    val_fraction
        Fraction of the remaining slices kept for validation (at least one slice).
    seed
        Seed of the random choice of ``mid_rand``.
    """

    strategy: SliceStrategy = "spread"
    fraction: float = 0.10
    val_fraction: float = 0.01
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig(_Record):
    """How to train.

    Parameters
    ----------
    epochs
        Passes over the training batches, used when ``steps`` is 0 (the paper's 60).
    steps
        Optimiser steps to run, whatever the number of annotated slices; 0 counts
        ``epochs`` instead. A budget in steps does the same work for 3 annotated slices
        as for 300. With ``steps_per_slice`` it is the cap of the budget.
    steps_per_slice, min_steps
        When ``steps_per_slice`` > 0 the budget grows with the annotation:
        ``clip(steps_per_slice * annotated slices, min_steps, steps)``.
    batch_size
        Slices per batch; clamped to the training data when there is less.
    run_length
        For the NUMSnet family: consecutive slices per training run (one run is one
        batch), so that the slice fusion learns from as many real neighbours as it sees
        at inference; 0 takes ``batch_size``. Clamped by each stack's length.
    learning_rate
        Peak learning rate.
    optimizer
        ``adam`` (the paper) or ``adamw`` (decoupled weight decay).
    weight_decay
        AdamW's decoupled weight decay.
    schedule
        ``constant`` (the paper), ``cosine`` or ``poly`` (``(1 - t)^0.9``, nnU-Net) decay
        to 0 over the run, after ``warmup_steps`` of linear warm-up.
    warmup_steps
        Steps of linear warm-up from 0 to ``learning_rate``.
    loss
        ``bdl`` (BCE/2 + Dice, paper eq. 8-10), ``dice``, ``ce`` or ``dice_ce``
        (Dice + cross-entropy, as in nnU-Net).
    class_weights
        ``none``, or ``frequency``: the cross-entropy weighs each class by the cube root
        of how much rarer it is among the annotated pixels than the most frequent class
        (:mod:`~napari_numsnet.engine.class_weights`; ``ce`` and ``dice_ce`` losses with
        exclusive classes). The self-learning loop uses it for its tiny k-means classes.
    augment
        The paper's affine (rotation, shifts and shear 0.2, zoom 0.8-1) on every batch.
    rotation
        Half-width of the affine's uniform rotation range, radians (the paper's 0.2,
        about 11.5 degrees; nnU-Net's 2D configurations rotate by up to pi).
    zoom
        ``(low, high)`` range of the affine's scale factor per axis, output to input:
        below 1 magnifies, above 1 shrinks (the paper's ``(0.8, 1.0)`` only magnifies;
        nnU-Net scales by 0.7-1.4).
    run_rotation, run_zoom
        For the NUMSnet family: the affine's ranges for a run of consecutive slices,
        which share one transform (``None``: ``rotation`` and ``zoom``).
    intensity_augment
        Brightness, contrast, gamma, Gaussian noise and blur on every batch, as in
        nnU-Net (only where ``augment`` is on).
    mirror
        Flip each in-plane axis with probability 1/2 inside the affine, as nnU-Net
        mirrors (only where ``augment`` is on); pair it with test-time flips
        (:attr:`PredictConfig.mirror`).
    patch_size
        Side of the square patch, pixels, each augmented training slice is cut to at a
        random place, as nnU-Net trains on patches (only where ``augment`` is on, for
        slice and sequence models; a multiple of the model's size rule; 0, or a side not
        smaller than the slices': the whole slice). Validation and prediction always see
        whole slices; the semi-supervised term's unannotated slices are cut alike.
    reverse_runs
        For the NUMSnet family: give each training run in descending slice order with
        probability 1/2 (only where ``augment`` is on), so the slice fusion carries
        features downwards as well as upwards; pair it with
        ``PredictConfig.direction="both"``. The paper carries upwards only.
    semi_supervised
        Weight of FixMatch's consistency term on the unannotated slices of the training
        stacks (slice models with exclusive classes; 0: off). It starts after a fifth of
        the steps, once the model's own labels mean something.
    semi_supervised_min_slices
        The term is used only when at least this many slices are annotated (all stacks
        together); with fewer, the run is supervised and its record says why. With three
        annotated slices of one stack the model's own labels are too poor to teach
        (``benchmarks/README.md``).
    confidence
        Probability a pixel's pseudo-label needs to enter that term.
    strong_view
        The perturbation the term teaches invariance to: ``intensity`` (nnU-Net's
        intensity changes) or ``unimatch`` (UniMatch's colour jitter, blur and CutMix
        between unannotated slices, pseudo-labels mixed with the images).
    weight_average
        Decay of an exponential moving average of the weights (0: off; 0.998 spans about
        500 steps). When on, validation scores the averaged weights, and they are the
        ones kept as the best and returned; the periodic "last" checkpoint keeps the
        trained ones, to continue from.
    keep_best
        Return the weights with the best validation Dice rather than the last ones
        (only when there are validation slices).
    val_every
        Validate every this many steps (0: after every epoch).
    patience
        Stop after this many validations without a better Dice (0: never stop early).
    checkpoint_seconds
        At most this often, hand the current state to ``fit``'s ``on_checkpoint``.
    amp
        Mixed precision where the device supports it (CUDA only).
    cpu_bf16
        On a CPU with bfloat16 matrix units (AMX), train under bfloat16 autocast;
        ignored on other CPUs, where it is no faster (AVX-512 BF16 alone) or about 20
        times slower (emulated), and on GPUs (``amp``).
    device
        ``auto`` (CUDA, then MPS, then CPU) or a torch device string.
    seed
        Seed for weights, batches and augmentation.
    preset
        Name of the preset the record came from, for the training record only.
    """

    epochs: int = 60
    steps: int = 0
    steps_per_slice: int = 0
    min_steps: int = 0
    batch_size: int = 5
    run_length: int = 0
    learning_rate: float = 1e-3
    optimizer: OptimizerName = "adam"
    weight_decay: float = 0.0
    schedule: ScheduleName = "constant"
    warmup_steps: int = 0
    loss: LossName = "bdl"
    class_weights: ClassWeightsName = "none"
    augment: bool = True
    rotation: float = 0.2
    zoom: tuple[float, float] = (0.8, 1.0)
    run_rotation: float | None = None
    run_zoom: tuple[float, float] | None = None
    intensity_augment: bool = False
    mirror: bool = False
    patch_size: int = 0
    reverse_runs: bool = False
    semi_supervised: float = 0.0
    semi_supervised_min_slices: int = 0
    confidence: float = 0.9
    strong_view: StrongViewName = "intensity"
    weight_average: float = 0.0
    keep_best: bool = True
    val_every: int = 0
    patience: int = 0
    checkpoint_seconds: float = 120.0
    amp: bool = True
    cpu_bf16: bool = False
    device: str = "auto"
    seed: int = 0
    preset: str = "paper"

    @property
    def runs_reversed(self) -> bool:
        """Whether training reverses runs: ``reverse_runs`` with augmentation on."""
        return self.augment and self.reverse_runs

    def affine_ranges(self, run: bool) -> tuple[float, tuple[float, float]]:
        """``(rotation, zoom)`` for a batch: a run of the NUMSnet family, or slices."""
        if run:
            return (
                self.rotation if self.run_rotation is None else self.run_rotation,
                self.zoom if self.run_zoom is None else self.run_zoom,
            )
        return self.rotation, self.zoom

    @property
    def prediction_direction(self) -> Direction:
        """The direction a model trained so predicts in: ``both`` after reversed runs."""
        return "both" if self.runs_reversed else "forward"


def step_budget(config: TrainConfig, annotated: int, steps_per_epoch: int) -> int:
    """Optimiser steps a run of ``config`` takes on ``annotated`` slices.

    ``steps`` when fixed, ``clip(steps_per_slice * annotated, min_steps, steps)`` when it
    grows with the annotation, else ``epochs * steps_per_epoch``.
    """
    if config.steps > 0 and config.steps_per_slice > 0:
        return int(min(config.steps, max(config.min_steps, config.steps_per_slice * annotated)))
    if config.steps > 0:
        return config.steps
    return config.epochs * steps_per_epoch


@dataclass(frozen=True)
class PredictConfig(_Record):
    """How to predict a stack.

    Parameters
    ----------
    direction
        Order of travel along the stack for the NUMSnet family: ``forward``
        (ascending slice index), ``backward`` or ``both`` (probabilities averaged).
        ``None``: the checkpoint's own (:attr:`TrainConfig.prediction_direction`:
        ``both`` for a model trained with reversed runs), ``forward`` for a bare model.
    batch_size
        Slices per forward pass; the result does not depend on it.
    threshold
        Probability threshold for independent (sigmoid) classes, paper eq. 3.
    device
        ``auto`` or a torch device string.
    largest_component
        Label values reduced to their largest 3D connected component after prediction
        (nnU-Net's post-processing, for classes that are one organ); empty: none.
        ``None``: the classes the checkpoint's validation slices chose when it was
        trained (:attr:`Checkpoint.largest_component`), none for a bare model.
    mirror
        Test-time flips: average the probabilities of the slice as it is and flipped
        left-right, up-down and both (4 passes; slice and sequence models). For a model
        trained with :attr:`TrainConfig.mirror`.
    """

    direction: Direction | None = None
    batch_size: int = 8
    threshold: float = 0.5
    device: str = "auto"
    largest_component: tuple[int, ...] | None = None
    mirror: bool = False
