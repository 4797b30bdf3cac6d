"""A checkpoint is one file: weights, model and preprocessing configs, class names, record.

Written atomically (temporary file, fsync, rename), so a crash mid-write leaves the
previous checkpoint intact. Read with ``torch.load(weights_only=True)``: the file holds
tensors and plain Python values only, never pickled code.
"""

from __future__ import annotations

import errno
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from napari_numsnet.config import Direction, ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.errors import NumsnetError, ResourceError, resource_error
from napari_numsnet.io.atomic import atomic_path, remove_own_temporaries, write_fully
from napari_numsnet.io.resources import check_allocation
from napari_numsnet.models import create_model
from napari_numsnet.models.base import ModelContract

FORMAT = "napari-numsnet-checkpoint"
VERSION = 1
SUFFIX = ".numsnet.pt"


@dataclass
class Checkpoint:
    """Everything needed to predict with, or continue training, a model.

    Attributes
    ----------
    model_config, preprocess, train_config
        How the model was built, how its input was prepared, how it was trained.
    class_names
        One name per label value, background first for exclusive classes.
    state_dict
        The model's weights.
    optimizer_state
        Adam's state, to continue training exactly where it stopped.
    record
        The training record: epochs done, losses, validation Dice, device, time.
    """

    model_config: ModelConfig
    preprocess: PreprocessConfig
    class_names: list[str]
    state_dict: dict[str, torch.Tensor]
    train_config: TrainConfig | None = None
    optimizer_state: dict[str, Any] | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: nn.Module, **kwargs: Any) -> Checkpoint:
        """Capture ``model``'s weights (copied to the CPU) with its config."""
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return cls(model_config=model.config, state_dict=state, **kwargs)

    @property
    def epochs_done(self) -> int:
        return int(self.record.get("epochs_done", 0))

    @property
    def largest_component(self) -> tuple[int, ...]:
        """Label values reduced to their largest 3D component unless told otherwise.

        The classes for which that raised the Dice of the validation slices when the
        model was trained (``record["largest_component"]``); empty when it was trained
        without validation slices.
        """
        choice = self.record.get("largest_component") or {}
        return tuple(int(v) for v in choice.get("classes", ()))

    @property
    def direction(self) -> Direction:
        """The direction of travel it predicts in unless told otherwise: ``both`` when it
        was trained with reversed runs (:attr:`TrainConfig.reverse_runs`), else ``forward``.
        """
        if self.train_config is None:
            return "forward"
        return self.train_config.prediction_direction

    def build_model(self) -> nn.Module:
        """The model with these weights, on the CPU, in eval mode.

        The model is first laid out on the ``meta`` device (no memory): its size is
        checked against the memory available and its layers against the weights before
        anything is allocated.
        """
        try:
            with torch.device("meta"):
                layout = create_model(self.model_config).state_dict()
        except NumsnetError:
            raise
        except Exception as exc:  # a configuration edited into nonsense
            raise NumsnetError(
                f"The checkpoint's model configuration cannot be built ({exc}).",
                "The file is damaged or was edited: use another checkpoint or retrain.",
            ) from exc
        wrong = [
            k
            for k, v in layout.items()
            if k not in self.state_dict or tuple(self.state_dict[k].shape) != tuple(v.shape)
        ]
        if wrong:
            raise NumsnetError(
                f"The checkpoint's weights do not fit its {self.model_config.name} model "
                f"({len(wrong)} layers differ, e.g. {wrong[0]}).",
                "The file is damaged or was edited: use another checkpoint or retrain.",
            )
        nbytes = sum(v.numel() * v.element_size() for v in layout.values())
        check_allocation(
            nbytes,
            f"The checkpoint's {self.model_config.name} model needs",
            "Use a smaller model (--width-scale) or a machine with more memory.",
        )
        model = create_model(self.model_config)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise NumsnetError(
                f"The checkpoint's weights do not fit its {self.model_config.name} model "
                f"({str(exc).splitlines()[0]}).",
                "The file is damaged or was edited: use another checkpoint or retrain.",
            ) from exc
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_config": self.model_config.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "train_config": None if self.train_config is None else self.train_config.to_dict(),
            "class_names": list(self.class_names),
            "state_dict": self.state_dict,
            "optimizer_state": self.optimizer_state,
            "record": self.record,
        }


def checkpoint_bytes(data: dict[str, Any]) -> bytes:
    """``torch.save`` of ``data`` into memory (so a full disk fails as a plain write)."""
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically and return the path.

    The file is serialised in memory first and then written in one go to a temporary
    file that is renamed onto ``path`` only when complete, so a kill or a full disk at
    any moment leaves the previous file at ``path`` as it was.

    Raises
    ------
    ResourceError
        The folder cannot be created or written (disk full, file size limit, read-only,
        permissions), or ``path`` is a folder; no temporary file is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a part of the folder is a file
        raise resource_error(OSError(errno.ENOTDIR, str(exc)), path) from exc
    except OSError as exc:
        raise resource_error(exc, path) from exc
    data = checkpoint_bytes(checkpoint.to_dict())
    remove_own_temporaries(path.parent)  # what a killed writer left
    with atomic_path(path) as tmp:
        write_fully(tmp, data)
    return path


def read_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """The raw contents of a file written by ``torch.save``, with clear errors.

    Raises
    ------
    NumsnetError
        The file is missing or cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise NumsnetError(
            f"No checkpoint at {path}.",
            "Train a model first (numsnet train) or give the path of a *.numsnet.pt file.",
        )
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise resource_error(exc, path, "read") from exc
    check_allocation(size, f"The checkpoint {path} needs", "Use it on a machine with more memory.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except ResourceError:
        raise
    except OSError as exc:
        raise resource_error(exc, path, "read") from exc
    except Exception as exc:  # torch raises many types for a damaged file
        raise NumsnetError(
            f"The checkpoint {path} cannot be read ({type(exc).__name__}: {exc}).",
            "The file is damaged or not a checkpoint: use another checkpoint or retrain.",
        ) from exc
    if not isinstance(data, dict):
        raise NumsnetError(
            f"{path} is not a napari-numsnet checkpoint.",
            "Give a file written by numsnet train or the plugin's export (*.numsnet.pt).",
        )
    return data


def checkpoint_from_dict(data: dict[str, Any], path: str | Path = "checkpoint") -> Checkpoint:
    """Rebuild a :class:`Checkpoint` from :meth:`Checkpoint.to_dict` output."""
    if data.get("format") != FORMAT:
        raise NumsnetError(
            f"{path} is not a napari-numsnet checkpoint.",
            "Give a file written by numsnet train or the plugin's export (*.numsnet.pt).",
        )
    try:
        train = data.get("train_config")
        checkpoint = Checkpoint(
            model_config=ModelConfig.from_dict(data["model_config"]),
            preprocess=PreprocessConfig.from_dict(data["preprocess"]),
            train_config=None if train is None else TrainConfig.from_dict(train),
            class_names=list(data["class_names"]),
            state_dict=dict(data["state_dict"]),
            optimizer_state=data.get("optimizer_state"),
            record=data.get("record") or {},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NumsnetError(
            f"The checkpoint {path} is incomplete ({type(exc).__name__}: {exc}).",
            "The file is damaged: use another checkpoint or retrain.",
        ) from exc
    bad = [
        k
        for k, v in checkpoint.state_dict.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if bad:
        raise NumsnetError(
            f"The checkpoint {path} holds NaN or infinite weights ({len(bad)} tensors, e.g. "
            f"{bad[0]}): its predictions would be meaningless.",
            "Training diverged: retrain with a smaller --learning-rate, or use an earlier "
            "checkpoint.",
        )
    return checkpoint


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    NumsnetError
        The file is missing, is not a napari-numsnet checkpoint, or is damaged.
    """
    return checkpoint_from_dict(read_checkpoint_file(path), path)


def check_compatible(checkpoint: Checkpoint, num_classes: int) -> None:
    """Refuse to continue training a checkpoint made for another number of classes."""
    if checkpoint.model_config.num_classes != num_classes:
        raise NumsnetError(
            f"The checkpoint predicts {checkpoint.model_config.num_classes} classes "
            f"({', '.join(checkpoint.class_names)}) but the labels have {num_classes}.",
            "Use transfer learning (--transfer / transfer_from) to reuse it with a new head, "
            "or choose a checkpoint trained for these classes.",
        )


def transfer_model(checkpoint: Checkpoint, num_classes: int) -> nn.Module:
    """A new model for ``num_classes`` that reuses every layer of ``checkpoint`` but the head.

    This is the NUMSnet paper's transfer from lung CT (3 classes) to heart CT (7 classes).
    """
    config = checkpoint.model_config.replace(num_classes=num_classes)
    model = create_model(config)
    contract = cast(ModelContract, model)
    own = model.state_dict()
    reused = {
        k: v
        for k, v in checkpoint.state_dict.items()
        if not contract.is_head_parameter(k) and k in own and own[k].shape == v.shape
    }
    missing = [k for k in own if k not in reused and not contract.is_head_parameter(k)]
    if missing:
        raise NumsnetError(
            f"The checkpoint's {checkpoint.model_config.name} does not match the new model "
            f"({len(missing)} layers differ, e.g. {missing[0]}).",
            "Transfer needs the same model and widths; only the number of classes may change.",
        )
    model.load_state_dict(reused, strict=False)
    return model
