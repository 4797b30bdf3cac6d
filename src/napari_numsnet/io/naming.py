"""One file-naming helper: image stems, predicted-label and probability file names.

Used by prediction, the cohort, the probability writer and the workspace, so that
dotted names such as ``1.2.840.1.nii.gz`` keep every dot but the extension's.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_numsnet.io.volume import EXTENSIONS

_LONGEST_FIRST = sorted(EXTENSIONS, key=len, reverse=True)


def image_extension(path: str | os.PathLike[str]) -> str:
    """The image extension of ``path`` as written (``.nii.gz``), or ``""`` if none is known."""
    name = Path(path).name
    for ext in _LONGEST_FIRST:
        if name.lower().endswith(ext):
            return name[-len(ext) :]
    return ""


def image_stem(path: str | os.PathLike[str]) -> str:
    """File name without its image extension: ``1.2.840.1.nii.gz`` -> ``1.2.840.1``.

    A name with no known image extension loses its last suffix only (``a.b.txt`` ->
    ``a.b``).
    """
    name = Path(path).name
    ext = image_extension(name)
    return name[: -len(ext)] if ext else Path(name).stem


def labels_name(path: str | os.PathLike[str]) -> str:
    """``<stem>_labels<ext>``: the label file predicted from image ``path``
    (``<name>_labels.nii.gz`` when the image has no known extension)."""
    ext = image_extension(path)
    if not ext:
        return Path(path).name + "_labels.nii.gz"
    return image_stem(path) + "_labels" + ext


def probabilities_path(labels_path: str | os.PathLike[str]) -> Path:
    """``<labels stem>_probabilities.npy`` beside the label file ``labels_path``."""
    labels_path = Path(labels_path)
    return labels_path.with_name(image_stem(labels_path) + "_probabilities.npy")


def classes_path(labels_path: str | os.PathLike[str]) -> Path:
    """The class table beside a label file: ``<stem>.classes.json``."""
    path = Path(labels_path)
    return path.with_name(f"{image_stem(path)}.classes.json")
