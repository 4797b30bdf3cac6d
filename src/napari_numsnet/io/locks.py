"""Locks per output, verified outputs, and processes that end with their parent.

Two runs into one folder must never work on the same stack: each takes a lock file
``<status>.lock`` (created exclusively, holding its pid) and leaves a stack alone while
a live process holds its lock; the lock of a dead process is taken over. An output
recorded as done carries its size and hash, so a skipped output is one that is still
exactly what was written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from napari_numsnet.io.atomic import _pid_alive


def file_digest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"size": bytes, "blake2b": hex}`` of a file, to record beside it."""
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return {"size": size, "blake2b": digest.hexdigest()}


def matches_digest(path: str | os.PathLike[str], record: dict[str, Any]) -> bool:
    """Whether ``path`` still has the size and hash in ``record`` (no record: size only)."""
    try:
        if "blake2b" not in record:
            return Path(path).is_file()
        if os.path.getsize(path) != record.get("size"):
            return False
        return file_digest(path)["blake2b"] == record["blake2b"]
    except OSError:
        return False


class StackLock:
    """An exclusive lock file for one output; ``acquire()`` is False when a live process holds it.

    Parameters
    ----------
    path
        The lock file, e.g. ``<status>.lock``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.held = False

    def holder(self) -> int | None:
        """The pid in the lock file, or ``None``."""
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def acquire(self) -> bool:
        """Take the lock; take over the lock of a dead process; False if a live one holds it."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self.holder()
                if pid is not None and _pid_alive(pid) and pid != os.getpid():
                    return False
                if pid is None and time.time() - _mtime(self.path) < 5:
                    return False  # being written this very moment
                with contextlib.suppress(OSError):
                    self.path.unlink()  # a dead holder's lock
                continue
            except OSError:
                return True  # the folder cannot hold a lock (read-only): nobody else can
                # write there either, so going on is safe
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            self.held = True
            return True
        return False

    def release(self) -> None:
        if self.held and self.holder() == os.getpid():
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.held = False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def exit_with_parent(interval: float = 0.5) -> None:
    """End this process (``os._exit(1)``) as soon as its parent is gone (a watchdog thread).

    A worker whose parent was killed with SIGKILL would otherwise go on predicting and
    writing, and fail with broken-pipe tracebacks.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
