"""Write files atomically: a reader never sees a half-written file.

The data goes to a temporary file in the target's folder; only when it is complete and
flushed to disk is the temporary file renamed onto the target (``os.replace``, atomic on
POSIX and Windows for paths on one file system). If anything fails, the temporary file is
removed and an existing target is left as it was.

Temporaries carry a name the tool owns, ``.numsnet-tmp.<pid>.<12 hex>.<target name>``,
so :func:`remove_own_temporaries` can clean what a killed process left behind without
ever touching a user's file (``.notes.tmp.txt`` stays).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from napari_numsnet.errors import NumsnetError, ResourceError, resource_error

#: Prefix of every temporary file or folder the tool creates.
TMP_PREFIX = ".numsnet-tmp."
_TMP_PATTERN = re.compile(r"^\.numsnet-tmp\.(\d+)\.([0-9a-f]{12})\.(.+)$")
#: Temporaries of a live process older than this (seconds) are stale too (other hosts).
STALE_SECONDS = 24 * 3600.0


def temporary_name(target_name: str) -> str:
    """A fresh temporary name for ``target_name``, owned by this process.

    It ends with ``target_name``, so writers that choose the format by extension
    (``.nii.gz``, ``.npy``) behave as for the target.
    """
    return f"{TMP_PREFIX}{os.getpid()}.{secrets.token_hex(6)}.{target_name}"


def is_own_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s name is one that :func:`temporary_name` makes."""
    return _TMP_PATTERN.match(Path(path).name) is not None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_own_temporaries(folder: str | os.PathLike[str], include_live: bool = False) -> int:
    """Delete the tool's temporaries in ``folder`` that no live process is writing.

    Parameters
    ----------
    folder
        Folder to clean; missing folders are fine.
    include_live
        Also remove temporaries of live processes other than this one (never this
        process's own).

    Returns
    -------
    int
        How many temporaries were removed. Only names made by :func:`temporary_name`
        are ever considered; every other file is left alone.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        match = _TMP_PATTERN.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid():
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
        except OSError:
            continue
        if _pid_alive(pid) and not (include_live or old):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
    return removed


def _fsync_file(path: Path) -> None:
    with open(path, "r+b") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a rename in ``folder`` to disk where the platform allows opening a folder."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_writable_target(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work is spent, a destination that cannot be written.

    Parameters
    ----------
    path
        The file to be written later.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ResourceError
        ``path`` is an existing folder, its folder is missing or not a folder, or a
        test file cannot be created there (read-only, permissions, disk full).
    """
    target = Path(path)
    if target.is_dir():
        raise resource_error(OSError(errno.EISDIR, "is a directory"), target)
    folder = target.parent
    if not folder.is_dir():
        code = errno.ENOTDIR if folder.exists() else errno.ENOENT
        raise resource_error(OSError(code, "bad folder"), target)
    probe = folder / temporary_name("probe")
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0")
    except OSError as exc:
        raise resource_error(exc, target) from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return target


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
    ResourceError
        The write failed for a reason of the machine (disk full, file size limit,
        read-only folder, permissions) or ``path`` is an existing folder.

    Notes
    -----
    When the body raises, the temporary file is removed, ``path`` is untouched and the
    exception propagates (an ``OSError`` as a :class:`ResourceError`).
    """
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise NumsnetError(
            f"Cannot write {target}: the folder {folder} does not exist.",
            "Create the folder first or choose another destination.",
        )
    if target.is_dir():
        raise resource_error(OSError(errno.EISDIR, "is a directory"), target)
    tmp = folder / temporary_name(target.name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, ResourceError):
            raise resource_error(exc, target) from exc
        raise
    fsync_dir(folder)


def write_fully(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` and flush it to disk (no rename)."""
    with open(path, "xb") as handle:
        view = memoryview(data)
        while view:
            written = handle.write(view)
            view = view[written:]
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return ``path`` as a ``Path``."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target
