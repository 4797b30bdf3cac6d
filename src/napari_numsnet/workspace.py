"""The work folder of one image: annotations, annotated slices, class table, last checkpoint.

The napari plugin autosaves here while the user paints and restores from here when the
same image is opened again, so a crash or a closed window loses nothing. The folder lies
beside the image, ``<image name>.numsnet-work/``; when that folder cannot be written (or
is inside the installed package, or the image has no file), it lies in the user's data
folder instead, named after the image and a hash of its path (or of its voxels).

Contents, each written atomically (``napari_numsnet.io.atomic``):

- ``annotations.nii.gz`` (images with NIfTI geometry) or ``annotations.npy``: the
  ``(Z, H, W)`` annotation stack, in the layout and geometry of the image file;
- ``classes.json``: the class table (names and colours);
- ``work.json``: the annotated slices, the slice planner's settings, the image's shape
  and geometry;
- ``model.numsnet.pt``: the last checkpoint (or cascade of two checkpoints).

Standard library, numpy and the package's core only: no Qt, no napari.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_numsnet.config import SamplingConfig
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.atomic import atomic_path, atomic_write_bytes
from napari_numsnet.io.classes import ClassTable, load_class_table, save_class_table
from napari_numsnet.io.labels import read_labels, write_labels
from napari_numsnet.io.volume import EXTENSIONS, VolumeMeta

if TYPE_CHECKING:
    from napari_numsnet.cascade import Cascade

WORK_SUFFIX = ".numsnet-work"
ANNOTATIONS_NIFTI = "annotations.nii.gz"
ANNOTATIONS_NUMPY = "annotations.npy"
CLASSES_FILE = "classes.json"
STATE_FILE = "work.json"
CHECKPOINT_FILE = "model.numsnet.pt"
#: Environment variable that overrides the user data folder for work folders.
WORK_ROOT_ENV = "NAPARI_NUMSNET_WORK_DIR"
STATE_FORMAT = "napari-numsnet-work"


def image_stem(path: str | os.PathLike[str]) -> str:
    """File name without its image extension: ``ct.nii.gz`` -> ``ct``."""
    name = Path(path).name
    for ext in EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def user_work_root() -> Path:
    """Folder for work folders that cannot lie beside their image.

    ``$NAPARI_NUMSNET_WORK_DIR`` if set; else ``%LOCALAPPDATA%/napari-numsnet/work`` on
    Windows, ``~/Library/Application Support/napari-numsnet/work`` on macOS and
    ``$XDG_DATA_HOME/napari-numsnet/work`` (default ``~/.local/share``) elsewhere.
    """
    if os.environ.get(WORK_ROOT_ENV):
        return Path(os.environ[WORK_ROOT_ENV])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "napari-numsnet" / "work"


def data_key(data: np.ndarray) -> str:
    """A 16-hex-digit hash of an array's shape, dtype and values (for images without a file)."""
    array = np.ascontiguousarray(data)
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{array.shape}|{array.dtype.str}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _path_key(path: Path) -> str:
    return hashlib.blake2b(str(path.resolve()).encode(), digest_size=8).hexdigest()


def _package_folder() -> Path:
    return Path(__file__).resolve().parent


def _can_write_beside(path: Path) -> bool:
    folder = path.resolve().parent
    if folder == _package_folder() or _package_folder() in folder.parents:
        return False  # never write into the installed package (e.g. its sample data)
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def work_folder_for(
    source_path: str | os.PathLike[str] | None,
    data: np.ndarray | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """Where the work of an image lives (the folder is not created).

    Parameters
    ----------
    source_path
        The image file, or ``None`` for an image with no file.
    data
        The image's voxels; hashed to name the folder when there is no file.
    root
        Folder for work folders that cannot lie beside the image; ``None`` means
        :func:`user_work_root`.

    Returns
    -------
    Path
        ``<folder of image>/<image name>.numsnet-work`` when that folder is writable,
        else ``<root>/<image name>-<hash of its path>.numsnet-work``, or
        ``<root>/array-<hash of data>.numsnet-work`` without a file.

    Raises
    ------
    NumsnetError
        Neither a path nor data is given.
    """
    fallback = Path(root) if root is not None else user_work_root()
    if source_path is not None:
        path = Path(source_path)
        stem = image_stem(path)
        if _can_write_beside(path):
            return path.parent / f"{stem}{WORK_SUFFIX}"
        return fallback / f"{stem}-{_path_key(path)}{WORK_SUFFIX}"
    if data is None:
        raise NumsnetError(
            "Cannot name a work folder for an image with neither a file nor data.",
            "Pass the image's path or its voxels.",
        )
    return fallback / f"array-{data_key(data)}{WORK_SUFFIX}"


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
    """

    labels: np.ndarray
    annotated: list[int]
    classes: ClassTable | None
    sampling: SamplingConfig


class Workspace:
    """Reads and writes one image's work folder.

    Parameters
    ----------
    folder
        The work folder (created on the first write).
    meta
        Geometry of the image; NIfTI images get their annotations saved as NIfTI in the
        same geometry, anything else as ``.npy`` in stack order ``(Z, H, W)``.
    """

    def __init__(self, folder: str | os.PathLike[str], meta: VolumeMeta | None = None) -> None:
        self.folder = Path(folder)
        self.meta = meta

    @classmethod
    def for_image(
        cls,
        source_path: str | os.PathLike[str] | None,
        data: np.ndarray | None = None,
        meta: VolumeMeta | None = None,
        root: str | os.PathLike[str] | None = None,
    ) -> Workspace:
        """The workspace of an image (see :func:`work_folder_for`)."""
        return cls(work_folder_for(source_path, data, root), meta)

    @property
    def _nifti(self) -> bool:
        return self.meta is not None and self.meta.source_format == "nifti"

    @property
    def annotations_path(self) -> Path:
        return self.folder / (ANNOTATIONS_NIFTI if self._nifti else ANNOTATIONS_NUMPY)

    @property
    def classes_path(self) -> Path:
        return self.folder / CLASSES_FILE

    @property
    def state_path(self) -> Path:
        return self.folder / STATE_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    def has_annotations(self) -> bool:
        """Whether annotations were saved here."""
        return self.state_path.is_file() and self.annotations_path.is_file()

    def save_annotations(
        self,
        labels: np.ndarray,
        annotated: Sequence[int],
        classes: ClassTable | None = None,
        sampling: SamplingConfig | None = None,
    ) -> None:
        """Write the annotation stack, then the class table, then the record (atomically).

        Parameters
        ----------
        labels
            ``(Z, H, W)`` integer annotations, 0 = background.
        annotated
            Slices that count as annotated.
        classes, sampling
            The class table and the planner's settings, kept with the work.
        """
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise NumsnetError(
                f"Annotations of shape {labels.shape} are not a stack (Z, H, W).",
                "Annotate with a 3D Labels layer of the image's shape.",
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._nifti:
            write_labels(self.annotations_path, labels, self.meta)
        else:
            with atomic_path(self.annotations_path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, labels, allow_pickle=False)
        if classes is not None:
            save_class_table(classes, self.classes_path)
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "version": 1,
            "shape": [int(s) for s in labels.shape],
            "annotated": sorted({int(i) for i in annotated}),
            "sampling": (sampling or SamplingConfig()).to_dict(),
            "meta": None if self.meta is None else self.meta.to_dict(),
        }
        atomic_write_bytes(self.state_path, (json.dumps(state, indent=2) + "\n").encode())

    def load_annotations(self, shape: Sequence[int] | None = None) -> SavedWork | None:
        """Read the saved annotations, or ``None`` if none were saved.

        Parameters
        ----------
        shape
            The image's stack shape ``(Z, H, W)``, to refuse annotations of another image.

        Raises
        ------
        NumsnetError
            The record is damaged, or the annotations do not fit the image.
        """
        if not self.has_annotations():
            return None
        try:
            state = json.loads(self.state_path.read_text())
            annotated = [int(i) for i in state["annotated"]]
            sampling = SamplingConfig.from_dict(state.get("sampling") or {})
            saved_meta = VolumeMeta.from_dict(state["meta"]) if state.get("meta") else None
        except (ValueError, KeyError, TypeError) as exc:
            raise NumsnetError(
                f"The work record {self.state_path} is damaged ({exc}).",
                f"Move the folder {self.folder} away to start the annotations afresh.",
            ) from exc
        if self.annotations_path.suffix == ".npy":
            labels = np.load(self.annotations_path, allow_pickle=False)
        else:
            labels = read_labels(self.annotations_path, like=saved_meta or self.meta)
        if shape is not None and tuple(labels.shape) != tuple(int(s) for s in shape):
            raise NumsnetError(
                f"The saved annotations in {self.folder} have shape {tuple(labels.shape)} "
                f"but the image has {tuple(shape)}.",
                "They belong to another image: move that folder away to start afresh.",
            )
        classes = load_class_table(self.classes_path) if self.classes_path.is_file() else None
        return SavedWork(labels, annotated, classes, sampling)

    def save_checkpoint(self, checkpoint: Checkpoint | Cascade) -> Path:
        """Write the last checkpoint (or cascade) here (atomically)."""
        from napari_numsnet.cascade import save_predictor

        self.folder.mkdir(parents=True, exist_ok=True)
        return save_predictor(checkpoint, self.checkpoint_path)

    def load_checkpoint(self) -> Checkpoint | Cascade | None:
        """The last checkpoint (or cascade) saved here, or ``None``."""
        from napari_numsnet.cascade import load_predictor

        if not self.checkpoint_path.is_file():
            return None
        return load_predictor(self.checkpoint_path)
