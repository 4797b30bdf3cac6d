"""Export: labels to NIfTI in the source geometry with the class table, checkpoints to a file."""

from __future__ import annotations

from pathlib import Path

from napari.layers import Labels

from napari_numsnet.engine.checkpoint import SUFFIX, Checkpoint
from napari_numsnet.errors import NumsnetError
from napari_numsnet.workflows.cascade import Cascade, save_predictor

from . import layers as L
from ._writer import export_labels


def export_layer(layer: Labels, path: str | Path) -> list[str]:
    """Write a Labels layer to ``path`` (``.nii.gz`` added if missing) and its class table.

    Returns the files written: the label volume and ``<stem>.classes.json``.
    """
    return export_labels(path, layer.data, layer.metadata, layer.scale, L.classes_of(layer))


def checkpoint_path(path: str | Path) -> Path:
    """``path`` ending in ``.numsnet.pt``."""
    path = Path(path)
    if path.name.endswith(SUFFIX):
        return path
    if path.suffix == ".pt":
        path = path.with_suffix("")
    return path.with_name(path.name + SUFFIX)


def export_checkpoint(checkpoint: Checkpoint | Cascade | None, path: str | Path) -> Path:
    """Save ``checkpoint`` (or a cascade) for the command line
    (``numsnet predict --checkpoint <path>``)."""
    if checkpoint is None:
        raise NumsnetError("There is no trained model to export.", "Train first.")
    return save_predictor(checkpoint, checkpoint_path(path))
