"""CHS-Net's hierarchical segmentation: the region first, then the classes inside it.

Stage 1 segments the region (the lungs in CHS-Net) as one binary class; stage 2 sees
the image masked to that region (outside set to the stack's minimum, air for CT) and
segments the classes inside it (ground-glass, consolidation). Both stages are trained
from the same annotation, stage by stage: stage 1 on "label in the region classes",
stage 2 on the labels with the image masked by the reference region. At prediction
stage 2 runs on the image masked by stage 1's region, and nothing outside it is kept.

Any registry model can fill either stage: CHS-Net itself is RAIU-Net + RAIU-Net;
UNet++ for the lungs and NUMSnet for the infection is another choice.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_numsnet.config import (
    Direction,
    ModelConfig,
    PredictConfig,
    PreprocessConfig,
    TrainConfig,
)
from napari_numsnet.engine.checkpoint import (
    Checkpoint,
    checkpoint_bytes,
    checkpoint_from_dict,
    read_checkpoint_file,
    save_checkpoint,
)
from napari_numsnet.engine.events import ProgressCallback
from napari_numsnet.engine.predict import Prediction
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.atomic import atomic_path, write_fully
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.workflows.prediction import predict
from napari_numsnet.workflows.stacks import AnnotatedStack, as_stack_list
from napari_numsnet.workflows.training import train

CASCADE_FORMAT = "napari-numsnet-cascade"


@dataclass
class Cascade:
    """Two trained stages and the label values that make up stage 1's region."""

    region: Checkpoint
    inner: Checkpoint
    region_values: tuple[int, ...]

    @property
    def class_names(self) -> list[str]:
        return self.inner.class_names

    @property
    def model_config(self) -> ModelConfig:
        """Stage 2's model: it makes the output classes."""
        return self.inner.model_config

    @property
    def record(self) -> dict:
        """Stage 2's training record (the stage trained last)."""
        return self.inner.record

    @property
    def epochs_done(self) -> int:
        return self.inner.epochs_done

    @property
    def largest_component(self) -> tuple[int, ...]:
        """Stage 2's validated choice of classes reduced to their largest component."""
        return self.inner.largest_component

    @property
    def direction(self) -> Direction:
        """Stage 2's direction of travel (the region stage predicts in its own)."""
        return self.inner.direction

    def describe(self) -> str:
        """``cascade raiunet -> raiunet``: the two stages' models."""
        return f"cascade {self.region.model_config.name} -> {self.inner.model_config.name}"

    def predict(
        self,
        image: np.ndarray,
        config: PredictConfig = PredictConfig(),
        probabilities: bool = False,
    ) -> Prediction:
        """Labels ``(Z, H, W)`` of ``image``: stage 2 inside stage 1's region, 0 outside."""
        # ``largest_component`` names classes of the inner model, not of the region.
        region_config = config.replace(largest_component=())
        region = predict(self.region, image, region_config).labels > 0
        inner = predict(self.inner, mask_image(image, region), config, probabilities=probabilities)
        labels = np.where(region, inner.labels, 0).astype(inner.labels.dtype)
        probs = inner.probabilities
        if probs is not None:  # as the labels: background only outside the region
            probs = np.where(region[None], probs, 0).astype(probs.dtype)
            if self.inner.model_config.exclusive:
                probs[0][~region] = 1
        return Prediction(labels, probs)


def mask_image(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``image`` inside ``region``, the stack's minimum (air for CT) outside."""
    return np.where(region, image, image.min()).astype(image.dtype, copy=False)


def _region_stack(stack: AnnotatedStack, values: Sequence[int]) -> AnnotatedStack:
    region = np.isin(stack.labels, values).astype(np.uint8)
    return AnnotatedStack(
        stack.image, region, stack.annotated, stack.val_slices, name=f"{stack.name} (region)"
    )


def _inner_stack(stack: AnnotatedStack, values: Sequence[int]) -> AnnotatedStack:
    region = np.isin(stack.labels, values)
    return AnnotatedStack(
        mask_image(stack.image, region),
        stack.labels,
        stack.annotated,
        stack.val_slices,
        name=f"{stack.name} (inside region)",
    )


def train_cascade(
    stacks: AnnotatedStack | Sequence[AnnotatedStack],
    region_model: ModelConfig,
    inner_model: ModelConfig,
    training: TrainConfig = TrainConfig(),
    preprocess: PreprocessConfig | None = None,
    classes: ClassTable | None = None,
    region_values: Sequence[int] | None = None,
    callback: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
) -> Cascade:
    """Train stage 1 (region) then stage 2 (classes inside the region).

    Parameters
    ----------
    stacks
        Annotated stacks whose labels hold the inner classes and, optionally, a region
        class of their own (e.g. lung, ground-glass, consolidation).
    region_model, inner_model
        Any registry models; ``region_model.num_classes`` is set to 2 (background, region).
    region_values
        Label values that form the region; default every non-zero value.
    """
    stacks = as_stack_list(stacks)
    values = tuple(region_values) if region_values else None
    if values is None:
        values = tuple(range(1, inner_model.num_classes + (0 if inner_model.exclusive else 1)))
    if not values or min(values) < 1:
        raise NumsnetError(
            f"Region classes {values} must be label values of 1 or more.",
            "Give the label values that make up the region (e.g. the lung and what lies in it).",
        )
    region_classes = ClassTable.from_names(["background", "region"])
    region = train(
        [_region_stack(s, values) for s in stacks],
        region_model.replace(num_classes=2, exclusive=True),
        training,
        preprocess,
        region_classes,
        callback=callback,
        stop_event=stop_event,
    )
    inner = train(
        [_inner_stack(s, values) for s in stacks],
        inner_model,
        training,
        preprocess,
        classes,
        callback=callback,
        stop_event=stop_event,
    )
    return Cascade(region, inner, values)


def save_cascade(cascade: Cascade, path: str | Path) -> Path:
    """Write both stages to one file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "format": CASCADE_FORMAT,
        "region": cascade.region.to_dict(),
        "inner": cascade.inner.to_dict(),
        "region_values": list(cascade.region_values),
    }
    payload = checkpoint_bytes(data)  # in memory first: a full disk fails as a plain write
    with atomic_path(path) as tmp:
        write_fully(tmp, payload)
    return path


def save_predictor(predictor: Checkpoint | Cascade, path: str | Path) -> Path:
    """Write a checkpoint or a cascade to ``path``, atomically."""
    if isinstance(predictor, Cascade):
        return save_cascade(predictor, path)
    return save_checkpoint(predictor, path)


def load_predictor(path: str | Path) -> Checkpoint | Cascade:
    """A checkpoint or a cascade, whichever the file holds."""
    data = read_checkpoint_file(path)
    if data.get("format") == CASCADE_FORMAT:
        return Cascade(
            checkpoint_from_dict(data["region"], path),
            checkpoint_from_dict(data["inner"], path),
            tuple(int(v) for v in data["region_values"]),
        )
    return checkpoint_from_dict(data, path)
