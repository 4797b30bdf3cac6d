"""One autosave unit of a work folder, ``save-<number>/``, read back and checked.

The unit holds the annotations (``annotations.nii.gz`` or ``annotations.npy``), the class
table (``classes.json``) and, written last, the record ``work.json`` with the size and
hash of each file. A unit whose files do not match its record raises
:class:`DamagedSave`, so the caller can pass over it to an older one. How the units are
written and chosen: :class:`napari_numsnet.workspace.Workspace`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_numsnet.config import SamplingConfig
from napari_numsnet.io.classes import ClassTable, load_class_table
from napari_numsnet.io.labels import read_labels
from napari_numsnet.io.volume import VolumeMeta

ANNOTATIONS_NIFTI = "annotations.nii.gz"
ANNOTATIONS_NUMPY = "annotations.npy"
CLASSES_FILE = "classes.json"
STATE_FILE = "work.json"


def content_hash(data: bytes) -> str:
    """The BLAKE2b digest (16 bytes, hex) a save records for each of its files."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class DamagedSave(Exception):
    """A save whose files do not match its record or cannot be read."""


@dataclass
class SavedWork:
    """What a work folder holds about the annotations.

    Attributes
    ----------
    labels
        ``(Z, H, W)`` integer annotation stack.
    annotated
        Slices that count as annotated (ground truth, possibly empty), ascending.
    classes
        The class table, or ``None`` if none was saved.
    sampling
        The slice planner's settings.
    recovered
        ``None``, or why newer saves were passed over (damaged or incomplete) and which
        save was loaded instead.
    fingerprint
        The fingerprint of the image the annotations were made on, if recorded.
    """

    labels: np.ndarray
    annotated: list[int]
    classes: ClassTable | None
    sampling: SamplingConfig
    recovered: str | None = None
    fingerprint: str | None = None


def read_save(save: Path, meta: VolumeMeta | None, annotations_name: str) -> SavedWork:
    """Read the unit ``save`` and check each file against its record.

    Parameters
    ----------
    save
        The ``save-<number>/`` folder (or a legacy folder holding the same files).
    meta
        Geometry of the image, used when the record holds none (NIfTI annotations).
    annotations_name
        The annotation file to read when the record lists no files (legacy folders).

    Raises
    ------
    DamagedSave
        A file is missing, unreadable or does not match its recorded hash.
    """
    try:
        state = json.loads((save / STATE_FILE).read_text())
        annotated = [int(i) for i in state["annotated"]]
        sampling = SamplingConfig.from_dict(state.get("sampling") or {})
        saved_meta = VolumeMeta.from_dict(state["meta"]) if state.get("meta") else None
        for name, record in (state.get("files") or {}).items():
            if content_hash((save / name).read_bytes()) != record["blake2b"]:
                raise DamagedSave(f"{name} does not match its record")
        names = list(state.get("files") or [annotations_name])
        annotations = save / next(n for n in names if n.startswith("annotations"))
        if annotations.suffix == ".npy":
            labels = np.load(annotations, allow_pickle=False)
        else:
            labels = read_labels(annotations, like=saved_meta or meta)  # type: ignore[arg-type]
        classes_file = save / CLASSES_FILE
        classes = load_class_table(classes_file) if classes_file.is_file() else None
    except DamagedSave:
        raise
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
        raise DamagedSave(str(exc)) from exc
    return SavedWork(labels, annotated, classes, sampling, fingerprint=state.get("fingerprint"))
