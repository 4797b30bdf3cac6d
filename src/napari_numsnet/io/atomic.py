"""Write files atomically: a reader never sees a half-written file.

The data goes to a temporary file in the target's folder; only when it is complete and
flushed to disk is the temporary file renamed onto the target (``os.replace``, atomic on
POSIX and Windows for paths on one file system). If anything fails, the temporary file is
removed and an existing target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from napari_numsnet.errors import NumsnetError


def _suffixes(path: Path) -> str:
    """Return the suffixes a reader keys on: ``.nii.gz`` for ``x.nii.gz``, else the last one."""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() == ".gz":
        return "".join(suffixes[-2:])
    return path.suffix


def _fsync_file(path: Path) -> None:
    with open(path, "r+b") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    """Flush the rename to disk where the platform allows opening a folder (POSIX)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; on success move it onto ``path``.

    Parameters
    ----------
    path
        Final destination. Its folder must exist.

    Yields
    ------
    Path
        A path in the same folder that does not exist yet and ends with the same
        suffixes as ``path`` (``.nii.gz`` stays ``.nii.gz``), so that writers that choose
        the format by extension behave as for ``path``. The body must create it.

    Raises
    ------
    NumsnetError
        The destination folder does not exist.

    Notes
    -----
    When the body raises, the temporary file is removed, ``path`` is untouched and the
    exception propagates.
    """
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise NumsnetError(
            f"Cannot write {target}: the folder {folder} does not exist.",
            "Create the folder first or choose another destination.",
        )
    suffix = _suffixes(target)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    tmp = folder / f".{stem}.{secrets.token_hex(6)}.tmp{suffix}"
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return ``path`` as a ``Path``."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target
