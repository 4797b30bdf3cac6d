"""npe2 writer: a Labels layer to NIfTI in its image's geometry, class table as JSON beside it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable, save_class_table
from napari_numsnet.io.labels import write_labels as write_label_file
from napari_numsnet.io.naming import classes_path
from napari_numsnet.io.volume import VolumeMeta, volume_from_array

from .layers import KEY


def nifti_path(path: str | Path) -> Path:
    """``path`` with ``.nii.gz`` added unless it already ends in ``.nii`` or ``.nii.gz``."""
    path = Path(path)
    return path if path.name.lower().endswith((".nii", ".nii.gz")) else Path(f"{path}.nii.gz")


def geometry(labels: np.ndarray, metadata: dict[str, Any], scale: Any = None) -> VolumeMeta:
    """The image geometry stored in layer metadata (with the source file's NIfTI header).

    Without stored geometry the labels get a diagonal affine from the layer's ``scale``.
    """
    stored = (metadata or {}).get(KEY, {}).get("meta")
    if not stored:
        spacing = tuple(float(s) for s in scale[-3:]) if scale is not None else None
        return volume_from_array(np.asarray(labels), 0, spacing).meta
    meta = VolumeMeta.from_dict(stored)
    source = meta.source_path
    if meta.source_format == "nifti" and source and Path(source).is_file():
        with contextlib.suppress(Exception):  # a header is a nicety; the affine suffices
            meta.header = nib.load(source).header
    return meta


def export_labels(
    path: str | Path,
    labels: np.ndarray,
    metadata: dict[str, Any] | None = None,
    scale: Any = None,
    classes: ClassTable | None = None,
) -> list[str]:
    """Write ``(Z, H, W)`` labels to NIfTI with the source geometry and the class table.

    Returns
    -------
    list[str]
        The label file and, when a class table is known, its JSON.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise NumsnetError(
            f"Labels of shape {labels.shape} are not a stack (Z, H, W).",
            "Export a 3D Labels layer.",
        )
    target = nifti_path(path)
    write_label_file(target, labels, geometry(labels, metadata or {}, scale))
    written = [str(target)]
    stored = (metadata or {}).get(KEY, {}).get("classes")
    if classes is None and stored:
        classes = ClassTable(tuple(stored["names"]), tuple(stored["colors"]))
    if classes is not None:
        written.append(str(save_class_table(classes, classes_path(target))))
    return written


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for Labels layers (``.nii.gz`` / ``.nii``)."""
    return export_labels(path, np.asarray(data), meta.get("metadata"), meta.get("scale"))
