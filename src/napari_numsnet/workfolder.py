"""Where the work folder of an image lies, and how an image is recognised.

Beside the image, ``<whole file name>.numsnet-work/`` (``ct.nii`` and ``ct.nii.gz`` get
two folders); when that folder cannot be written (or is inside the installed package, or
the image has no file), in the user's data folder, named after the image and a hash of
its path (or of its voxels). Standard library and numpy only: no Qt, no napari.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.naming import image_stem
from napari_numsnet.io.volume import EXTENSIONS

WORK_SUFFIX = ".numsnet-work"
#: Environment variable that overrides the user data folder for work folders.
WORK_ROOT_ENV = "NAPARI_NUMSNET_WORK_DIR"


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


def image_fingerprint(data: np.ndarray) -> str:
    """A 16-hex-digit fingerprint of an image: shape, dtype and about 10^6 sampled voxels.

    Fast on large stacks (a strided sample, not every voxel) and different for two
    images of one shape, which a shape check alone would take for the same.
    """
    array = np.asarray(data)
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{array.shape}|{array.dtype.str}".encode())
    if array.ndim and array.size:
        step = max(1, round((array.size / 1e6) ** (1 / array.ndim)))
        sample = np.ascontiguousarray(array[(slice(None, None, step),) * array.ndim])
        digest.update(memoryview(sample).cast("B"))
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
        ``<folder of image>/<file name>.numsnet-work`` when that folder is writable,
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
            return path.parent / f"{path.name}{WORK_SUFFIX}"
        return fallback / f"{stem}-{_path_key(path)}{WORK_SUFFIX}"
    if data is None:
        raise NumsnetError(
            "Cannot name a work folder for an image with neither a file nor data.",
            "Pass the image's path or its voxels.",
        )
    return fallback / f"array-{data_key(data)}{WORK_SUFFIX}"


def legacy_folder(path: Path) -> Path | None:
    """The folder an earlier version used (``<stem>.numsnet-work``), if unambiguous."""
    stem = image_stem(path)
    legacy = path.parent / f"{stem}{WORK_SUFFIX}"
    if not legacy.is_dir() or legacy == path.parent / f"{path.name}{WORK_SUFFIX}":
        return None
    with contextlib.suppress(OSError):
        for other in path.parent.iterdir():
            same_stem = other.name != path.name and image_stem(other) == stem
            if same_stem and other.name.lower().endswith(tuple(EXTENSIONS)):
                return None  # two images share the stem: the old folder is ambiguous
    return legacy
