"""The error types the core raises for bad input and for faults of the machine.

Every message says what was wrong and what to do about it, so that the command line
and the napari widgets can show it to the user as it is. The command line exits with
status 2 on either.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path


class NumsnetError(ValueError):
    """Bad input or state that the user can fix.

    Parameters
    ----------
    problem
        What is wrong, in the user's terms.
    fix
        What to do about it.
    """

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}")

    def __str__(self) -> str:
        return f"{self.problem} {self.fix}"


class ResourceError(NumsnetError, OSError):
    """A file could not be written or read because of the machine: disk full, read-only
    folder, missing permission, not enough memory.

    Also an ``OSError`` (with ``errno`` set when known), so code that handles failed
    writes keeps handling it.
    """

    def __init__(self, problem: str, fix: str, code: int | None = None) -> None:
        super().__init__(problem, fix)
        self.errno = code  # type: ignore[misc]


#: What to do for each kind of failed write, keyed by ``errno``.
_FIXES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", "Free some space there or choose another folder."),
    errno.EFBIG: (
        "the file is larger than this system allows (file size limit)",
        "Raise the limit (ulimit -f) or write to another disk.",
    ),
    errno.EROFS: ("the folder is on a read-only file system", "Choose a writable folder."),
    errno.EACCES: (
        "permission denied",
        "Choose a folder you may write to, or change its permissions.",
    ),
    errno.EPERM: (
        "the operation is not permitted",
        "Choose a folder you may write to, or change its permissions.",
    ),
    errno.EISDIR: (
        "it is an existing folder",
        "Give a file name, not a folder (or a new name inside that folder).",
    ),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "Check the path."),
    errno.ENOENT: ("the folder does not exist", "Create the folder first or check the path."),
    errno.ENAMETOOLONG: ("the name is too long", "Choose a shorter name or folder."),
}
_DQUOT = getattr(errno, "EDQUOT", None)
if _DQUOT is not None:
    _FIXES[_DQUOT] = ("the disk quota is exceeded", "Free some of your space or ask for more.")


def _guess_code(path: Path) -> int | None:
    """The likely cause of a write error that came without ``errno`` (a C library's)."""
    import resource
    import shutil

    with contextlib.suppress(OSError, ValueError):
        if shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free < 1 << 20:
            return errno.ENOSPC
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
            return errno.EFBIG
    return None


def resource_error(
    exc: OSError, path: str | os.PathLike[str], action: str = "write"
) -> ResourceError:
    """Turn an ``OSError`` from writing (or reading) ``path`` into a :class:`ResourceError`.

    Parameters
    ----------
    exc
        The error the operating system gave.
    path
        The file the tool tried to write or read.
    action
        ``"write"`` or ``"read"``, for the message.

    Returns
    -------
    ResourceError
        Raise it ``from exc``; the message names the file, the cause and what to do.
    """
    if isinstance(exc, ResourceError):
        return exc
    code = exc.errno if exc.errno is not None else _guess_code(Path(path))
    what, fix = _FIXES.get(code or -1, (exc.strerror or str(exc), "Check the folder and retry."))
    kept = " Nothing was changed: an existing file there is as it was."
    kept = kept if action == "write" else ""
    return ResourceError(f"Could not {action} {Path(path)}: {what}.", f"{fix}{kept}", code)
