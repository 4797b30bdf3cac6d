"""Annotated stacks and what training makes of them: preprocessing, slice plans, samples.

    stack (image, partial labels, annotated slices) -> default preprocessing (HU window)
      -> slice plan -> whole preprocessed stacks with a mask of the slices that count

No napari, no Qt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_numsnet.config import ModelConfig, PreprocessConfig, SamplingConfig
from napari_numsnet.data.dataset import StackSample, validate_pair
from napari_numsnet.data.hounsfield import looks_like_hounsfield
from napari_numsnet.data.preprocess import Preprocessor
from napari_numsnet.data.slices import SliceSplit, annotated_slices, select_slices
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import SLICE_MODELS, get_spec, scaled_widths
from napari_numsnet.presets import Preset

#: Window applied to CT in Hounsfield units before min-max scaling (HU).
CT_WINDOW = (-1000.0, 1000.0)


@dataclass
class AnnotatedStack:
    """One stack with its (partial) annotation.

    Attributes
    ----------
    image
        ``(Z, H, W)`` raw intensities, stack axis first.
    labels
        ``(Z, H, W)`` integer labels; only the ``annotated`` slices are read.
    annotated
        Slices that count as annotated (ground truth, possibly empty); ``None`` means
        every slice with a non-zero label.
    val_slices
        Annotated slices held out for validation (never trained on).
    name
        For messages and records.
    """

    image: np.ndarray
    labels: np.ndarray
    annotated: Sequence[int] | None = None
    val_slices: Sequence[int] = ()
    name: str = "stack"


def as_stack_list(stacks: AnnotatedStack | Sequence[AnnotatedStack]) -> list[AnnotatedStack]:
    """One stack or several, as a list (what the workflows take either way)."""
    return [stacks] if isinstance(stacks, AnnotatedStack) else list(stacks)


def default_preprocess(
    image: np.ndarray, base: PreprocessConfig | None = None
) -> PreprocessConfig:
    """The preprocessing for ``image``: a CT window when it is in HU (unless ``base`` sets
    a window or clipping percentiles), min-max scaling."""
    base = base or PreprocessConfig()
    if base.window is None and base.clip_percentiles is None and looks_like_hounsfield(image):
        return base.replace(window=CT_WINDOW)
    return base


def model_for_preset(
    name: str, num_classes: int, preset: Preset, in_channels: int = 1, exclusive: bool = True
) -> ModelConfig:
    """The model ``name`` at the preset's size (the paper's widths times ``width_scale``),
    with the preset's 2.5D context where it is a slice model."""
    spec = get_spec(name)
    return ModelConfig(
        spec.name,
        in_channels=in_channels,
        num_classes=num_classes,
        widths=scaled_widths(name, preset.width_scale),
        exclusive=exclusive,
        context=preset.context if spec.name in SLICE_MODELS else 0,
    )


def plan_slices(n_slices: int, sampling: SamplingConfig = SamplingConfig()) -> SliceSplit:
    """Which slices to annotate for training and validation (NUMSnet paper, 10% default)."""
    return select_slices(n_slices, sampling)


def _check_stack_shapes(stack: AnnotatedStack) -> None:
    """Refuse a single image, or labels of another shape than the image."""
    image, labels = np.asarray(stack.image), np.asarray(stack.labels)
    if image.ndim != 3:
        raise NumsnetError(
            f"The image of {stack.name} has shape {image.shape}; a stack (Z, H, W) is needed.",
            "Open the whole volume, not a single slice.",
        )
    if image.shape != labels.shape:
        raise NumsnetError(
            f"The image stack {stack.name} has shape {image.shape} but the labels have "
            f"{labels.shape}.",
            "Use labels drawn on this very image (same number of slices, rows, columns).",
        )


def _stack_sample(
    stack: AnnotatedStack, slices: np.ndarray, pre: Preprocessor, images: np.ndarray
) -> StackSample:
    """The whole preprocessed stack; labels only on ``slices``, which alone count."""
    annotated = np.zeros(len(images), dtype=bool)
    annotated[slices] = True
    labels = np.zeros(images.shape, dtype=np.int64)
    labels[slices] = pre.prepare_labels(np.asarray(stack.labels)[slices].astype(np.int64))
    return StackSample(images, labels, annotated, stack.name)


def build_training_data(
    stacks: Sequence[AnnotatedStack],
    model: ModelConfig,
    preprocess: PreprocessConfig,
) -> tuple[list[StackSample], list[StackSample]]:
    """Preprocess the annotated slices of each stack into training and validation data.

    Only the annotated slices are read from ``labels`` (and checked against the number of
    classes): the other slices may hold anything. Each stack is kept whole, with a mask
    of the slices that count: the NUMSnet family and 3D models see the unannotated
    neighbours, and a semi-supervised term may use the unannotated slices' images.
    """
    train, val = [], []
    for stack in stacks:
        _check_stack_shapes(stack)
        annotated = annotated_slices(stack.labels, stack.annotated)
        validate_pair(
            np.asarray(stack.image)[annotated],
            np.asarray(stack.labels)[annotated],
            model.num_classes,
            model.exclusive,
        )
        held_out = np.intersect1d(annotated, np.asarray(stack.val_slices, dtype=int))
        fit_slices = np.setdiff1d(annotated, held_out)
        if len(fit_slices) == 0:
            raise NumsnetError(
                f"Every annotated slice of {stack.name} is held out for validation.",
                "Annotate more slices or hold out fewer for validation.",
            )
        pre = Preprocessor(preprocess)
        images = pre.prepare(stack.image)
        train.append(_stack_sample(stack, fit_slices, pre, images))
        if len(held_out):
            val.append(_stack_sample(stack, held_out, pre, images))
    return train, val
