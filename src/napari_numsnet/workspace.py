"""The work folder of one image: annotations, annotated slices, class table, last checkpoint.

The napari plugin autosaves here while the user paints and restores from here when the
same image is opened again, so a crash or a closed window loses nothing. The folder lies
beside the image, ``<whole file name>.numsnet-work/`` (``ct.nii`` and ``ct.nii.gz`` get
two folders); when that folder cannot be written (or is inside the installed package, or
the image has no file), it lies in the user's data folder instead, named after the image
and a hash of its path (or of its voxels).

One autosave is one unit: a folder ``save-<number>/`` written completely under a
temporary name and renamed into place in one step, holding

- ``annotations.nii.gz`` (images with NIfTI geometry) or ``annotations.npy``: the
  ``(Z, H, W)`` annotation stack, in the layout and geometry of the image file;
- ``classes.json``: the class table (names and colours);
- ``work.json``, written last: the annotated slices, the slice planner's settings, the
  image's shape, geometry and fingerprint, and the size and hash of the two files above.

Loading takes the newest save whose files match its record, so a kill at any moment
leaves the previous save to load; the three newest saves are kept. Beside the saves lies
``model.numsnet.pt``, the last checkpoint (or cascade), written atomically.

Where the folder lies: ``napari_numsnet.workfolder``. Standard library, numpy and the
package's core only: no Qt, no napari.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_numsnet.config import SamplingConfig
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.errors import NumsnetError, ResourceError, resource_error
from napari_numsnet.io.atomic import (
    fsync_dir,
    remove_own_temporaries,
    temporary_name,
    write_fully,
)
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.io.labels import write_labels
from napari_numsnet.io.saved_work import (
    ANNOTATIONS_NIFTI,
    ANNOTATIONS_NUMPY,
    CLASSES_FILE,
    STATE_FILE,
    DamagedSave,
    SavedWork,
    content_hash,
    read_save,
)
from napari_numsnet.io.volume import VolumeMeta
from napari_numsnet.workfolder import (
    WORK_ROOT_ENV,
    WORK_SUFFIX,
    data_key,
    image_fingerprint,
    image_stem,
    legacy_folder,
    user_work_root,
    work_folder_for,
)

if TYPE_CHECKING:
    from napari_numsnet.workflows.cascade import Cascade

CHECKPOINT_FILE = "model.numsnet.pt"
STATE_FORMAT = "napari-numsnet-work"
#: Complete saves kept in a work folder (older ones are removed after a new save).
KEEP_SAVES = 3
_SAVE_PATTERN = re.compile(r"^save-(\d{8})$")


__all__ = [
    "WORK_ROOT_ENV",
    "WORK_SUFFIX",
    "SavedWork",
    "Workspace",
    "data_key",
    "image_fingerprint",
    "image_stem",
    "user_work_root",
    "work_folder_for",
]


class Workspace:
    """Reads and writes one image's work folder.

    Parameters
    ----------
    folder
        The work folder (created on the first write).
    meta
        Geometry of the image; NIfTI images get their annotations saved as NIfTI in the
        same geometry, anything else as ``.npy`` in stack order ``(Z, H, W)``.
    fingerprint
        :func:`image_fingerprint` of the image, kept with each save and checked on load.
    legacy
        A folder of an earlier version to read from while this one holds no save.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        meta: VolumeMeta | None = None,
        fingerprint: str | None = None,
        legacy: str | os.PathLike[str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.meta = meta
        self.fingerprint = fingerprint
        self.legacy = None if legacy is None else Path(legacy)

    @classmethod
    def for_image(
        cls,
        source_path: str | os.PathLike[str] | None,
        data: np.ndarray | None = None,
        meta: VolumeMeta | None = None,
        root: str | os.PathLike[str] | None = None,
    ) -> Workspace:
        """The workspace of an image (see :func:`work_folder_for`).

        ``data``, when given, is fingerprinted so that saved work is restored only onto
        the image it was made on.
        """
        folder = work_folder_for(source_path, data, root)
        legacy = None if source_path is None else legacy_folder(Path(source_path))
        fingerprint = None if data is None else image_fingerprint(data)
        return cls(folder, meta, fingerprint, legacy)

    @property
    def _nifti(self) -> bool:
        return self.meta is not None and self.meta.source_format == "nifti"

    @property
    def _annotations_name(self) -> str:
        return ANNOTATIONS_NIFTI if self._nifti else ANNOTATIONS_NUMPY

    def saves(self) -> list[Path]:
        """The save folders here, newest first (complete or not: see :meth:`load_annotations`)."""
        try:
            names = [e.name for e in os.scandir(self.folder) if e.is_dir()]
        except OSError:
            return []
        numbered = [(int(m.group(1)), n) for n in names if (m := _SAVE_PATTERN.match(n))]
        return [self.folder / n for _, n in sorted(numbered, reverse=True)]

    def _current(self) -> Path:
        saves = self.saves()
        if saves:
            return saves[0]
        if self.legacy is not None and not (self.folder / STATE_FILE).is_file():
            return self.legacy
        return self.folder  # the single-file layout of earlier versions

    @property
    def annotations_path(self) -> Path:
        """The annotation file of the newest save."""
        return self._current() / self._annotations_name

    @property
    def classes_path(self) -> Path:
        return self._current() / CLASSES_FILE

    @property
    def state_path(self) -> Path:
        """The record of the newest save."""
        return self._current() / STATE_FILE

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
    ) -> Path:
        """Write one save (annotations, class table, record) as one unit.

        Parameters
        ----------
        labels
            ``(Z, H, W)`` integer annotations, 0 = background.
        annotated
            Slices that count as annotated.
        classes, sampling
            The class table and the planner's settings, kept with the work.

        Returns
        -------
        Path
            The new save folder.

        Raises
        ------
        ResourceError
            The work folder cannot be written (disk full, read-only): earlier saves are
            intact and no temporary is left.
        """
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise NumsnetError(
                f"Annotations of shape {labels.shape} are not a stack (Z, H, W).",
                "Annotate with a 3D Labels layer of the image's shape.",
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise resource_error(exc, self.folder) from exc
        remove_own_temporaries(self.folder)
        tmp = self.folder / temporary_name("save")
        try:
            tmp.mkdir()
            files = {self._annotations_name: self._labels_bytes(labels, tmp)}
            if classes is not None:
                files[CLASSES_FILE] = classes.to_json().encode()
            for name, data in files.items():
                write_fully(tmp / name, data)
            state: dict[str, Any] = {
                "format": STATE_FORMAT,
                "version": 2,
                "shape": [int(s) for s in labels.shape],
                "annotated": sorted({int(i) for i in annotated}),
                "sampling": (sampling or SamplingConfig()).to_dict(),
                "meta": None if self.meta is None else self.meta.to_dict(),
                "fingerprint": self.fingerprint,
                "files": {
                    n: {"size": len(d), "blake2b": content_hash(d)} for n, d in files.items()
                },
            }
            write_fully(tmp / STATE_FILE, (json.dumps(state, indent=2) + "\n").encode())
            fsync_dir(tmp)
            target = self._rename_into_place(tmp)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and not isinstance(exc, ResourceError):
                raise resource_error(exc, self.folder / "save") from exc
            raise
        fsync_dir(self.folder)
        for old in self.saves()[KEEP_SAVES:]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def _labels_bytes(self, labels: np.ndarray, scratch: Path) -> bytes:
        """The annotation file's bytes (NIfTI through a scratch file in ``scratch``)."""
        if self._nifti:
            assert self.meta is not None
            path = write_labels(scratch / f"scratch-{ANNOTATIONS_NIFTI}", labels, self.meta)
            data = path.read_bytes()
            path.unlink()
            return data
        buffer = io.BytesIO()
        np.save(buffer, labels, allow_pickle=False)
        return buffer.getvalue()

    def _rename_into_place(self, tmp: Path) -> Path:
        """Rename ``tmp`` to the next free ``save-<number>`` (another writer may race)."""
        saves = self.saves()
        number = int(saves[0].name[5:]) + 1 if saves else 1
        for _ in range(100):
            target = self.folder / f"save-{number:08d}"
            try:
                os.rename(tmp, target)  # fails on an existing, non-empty folder
                return target
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) and not target.exists():
                    raise
            number += 1
        raise ResourceError(
            f"Could not name a new save in {self.folder}.", "Move old save-* folders away."
        )

    def load_annotations(self, shape: Sequence[int] | None = None) -> SavedWork | None:
        """Read the newest complete save, or ``None`` if nothing was saved.

        Parameters
        ----------
        shape
            The image's stack shape ``(Z, H, W)``, to refuse annotations of another image.

        Raises
        ------
        NumsnetError
            No save is complete, or the annotations belong to another image (another
            shape or fingerprint). Nothing on disk is changed.
        """
        problems: list[str] = []
        for _ in range(3):  # a writer may prune a save while it is read: list again
            candidates = self.saves() or ([self._current()] if self.has_annotations() else [])
            if not candidates:
                return None
            for save in candidates:
                try:
                    work = self._read_save(save, shape)
                except DamagedSave as exc:
                    if f"{save.name}: {exc}" not in problems:
                        problems.append(f"{save.name}: {exc}")
                    continue
                if problems:
                    work.recovered = (
                        f"Newer saves were damaged or incomplete ({'; '.join(problems)}); "
                        f"restored {save.name}."
                    )
                return work
        raise NumsnetError(
            f"The work record in {self.folder} is damaged ({'; '.join(problems)}).",
            f"Move the folder {self.folder} away to start the annotations afresh.",
        )

    def _read_save(self, save: Path, shape: Sequence[int] | None) -> SavedWork:
        work = read_save(save, self.meta, self._annotations_name)
        if shape is not None and tuple(work.labels.shape) != tuple(int(s) for s in shape):
            raise NumsnetError(
                f"The saved annotations in {self.folder} have shape {tuple(work.labels.shape)} "
                f"but the image has {tuple(shape)}.",
                "They belong to another image: move that folder away to start afresh.",
            )
        if self.fingerprint and work.fingerprint and work.fingerprint != self.fingerprint:
            raise NumsnetError(
                f"The saved annotations in {self.folder} were made on another image of the "
                f"same shape {tuple(work.labels.shape)} (its voxels differ).",
                "They belong to another image: move that folder away to start afresh.",
            )
        return work

    def keep_current(self) -> Path | None:
        """Copy the newest save to ``kept-<number>/``, which is never pruned.

        Called before the user starts afresh (a new annotation layer), so the work saved
        so far survives any number of later autosaves. Returns the copy, or ``None``
        when nothing was saved.
        """
        saves = self.saves()
        if not saves:
            return None
        kept = self.folder / f"kept-{saves[0].name[5:]}"
        if not kept.exists():
            tmp = self.folder / temporary_name("kept")
            shutil.copytree(saves[0], tmp)
            os.rename(tmp, kept)
            fsync_dir(self.folder)
        return kept

    def save_checkpoint(self, checkpoint: Checkpoint | Cascade) -> Path:
        """Write the last checkpoint (or cascade) here (atomically)."""
        from napari_numsnet.workflows.cascade import save_predictor

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise resource_error(exc, self.folder) from exc
        return save_predictor(checkpoint, self.checkpoint_path)

    def load_checkpoint(self) -> Checkpoint | Cascade | None:
        """The last checkpoint (or cascade) saved here (or in the legacy folder), or ``None``."""
        from napari_numsnet.workflows.cascade import load_predictor

        for folder in (self.folder, self.legacy):
            if folder is not None and (folder / CHECKPOINT_FILE).is_file():
                return load_predictor(folder / CHECKPOINT_FILE)
        return None
