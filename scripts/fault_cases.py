"""Run the fault cases of docs/reliability.md and write its table from what happened.

Each case tries one bad input or fault (a full disk, a read-only folder, an output that
is an input, a kill in the middle of a write, a header that claims 10^9 voxels, ...) and
records what the tool did: a clear error (the ``NumsnetError`` message, or the CLI's
exit status and message), a result that was checked, or a Python traceback. Files the
user made are hashed before and after: any change counts as data lost.

Usage::

    python scripts/fault_cases.py                    # print the table
    python scripts/fault_cases.py --write docs/reliability.md

The fault-injection tests (``tests/test_faults.py``) run the same cases.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import errno
import hashlib
import io
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from napari_numsnet.errors import NumsnetError  # noqa: E402

CLASSES = {
    1: "inputs and foreign files",
    2: "autosave",
    3: "plugin",
    4: "training runs",
    5: "resource faults",
    6: "nothing silently wrong",
    7: "sizes before memory",
    8: "cohort",
}
MARK_START = "<!-- fault-cases:start -->"
MARK_END = "<!-- fault-cases:end -->"


class Wrong(AssertionError):
    """The tool answered, but not as it should (a silently wrong result)."""


def expect(condition: bool, message: str) -> None:
    """Raise :class:`Wrong` with ``message`` unless ``condition``."""
    if not condition:
        raise Wrong(message)


@dataclass
class Ctx:
    """What a case gets: a fresh folder and a register of the user's files."""

    folder: Path
    protected: dict[Path, str] = field(default_factory=dict)

    def protect(self, *paths: Path) -> None:
        """Hash ``paths`` now; they must be unchanged when the case ends."""
        for path in paths:
            self.protected[Path(path)] = _digest(Path(path))

    def lost(self) -> list[str]:
        return [str(p.name) for p, d in self.protected.items() if _digest(p) != d]

    def cli(self, *argv: str) -> tuple[int, str]:
        """Run ``numsnet argv`` in this process; return the exit status and stderr+stdout.

        An exception that escapes ``main`` propagates: it is a traceback for the user.
        """
        from napari_numsnet.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse refusing an option
                rc = int(exc.code or 0)
        text = err.getvalue() + out.getvalue()
        if "Traceback (most recent call last)" in text:
            raise RuntimeError(f"traceback printed by numsnet {argv[0]}:\n{text}")
        return rc, text


def _digest(path: Path) -> str:
    if path.is_dir():
        return "dir:" + ",".join(sorted(p.name for p in path.iterdir()))
    if not path.exists():
        return "missing"
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


@dataclass
class Case:
    number: int
    cls: int
    tried: str
    run: Callable[[Ctx], str]


CASES: list[Case] = []


def case(cls: int, tried: str) -> Callable[[Callable[[Ctx], str]], Callable[[Ctx], str]]:
    """Register a case: ``run(ctx)`` returns what happened or raises ``NumsnetError``."""

    def register(run: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
        CASES.append(Case(len(CASES) + 1, cls, tried, run))
        return run

    return register


@dataclass
class Result:
    case: Case
    outcome: str
    traceback: bool
    wrong: bool
    lost: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not (self.traceback or self.wrong or self.lost)


class CaseTimeout(Exception):
    """A case ran past its time limit (a hang or an absurd amount of work)."""


def _alarm(signum: int, frame: object) -> None:
    raise CaseTimeout()


def run_case(item: Case, limit: int = 60) -> Result:
    """Run one case in a fresh temporary folder, for at most ``limit`` seconds."""
    with tempfile.TemporaryDirectory(prefix="fault-") as tmp:
        ctx = Ctx(Path(tmp))
        start = time.perf_counter()
        tb = wrong = False
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(limit)
        try:
            outcome = item.run(ctx)
        except CaseTimeout:
            wrong, outcome = True, f"TIMEOUT: still running after {limit} s"
        except NumsnetError as exc:
            outcome = f"refused: {exc}"
        except Wrong as exc:
            wrong, outcome = True, f"WRONG: {exc}"
        except Exception:  # a traceback the user would see
            tb = True
            outcome = "TRACEBACK: " + traceback.format_exc().strip().splitlines()[-1]
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        seconds = time.perf_counter() - start
        for folder in {str(ctx.folder.resolve()), str(ctx.folder)}:
            outcome = outcome.replace(folder, "{case folder}")
        return Result(item, outcome, tb, wrong, ctx.lost(), seconds)


# --------------------------------------------------------------------------- fault tools


def _under(path: object, folder: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(folder.resolve())  # type: ignore[arg-type]
    except (TypeError, ValueError, OSError):
        return False


class _FullFile:
    """A file whose writes fail with ENOSPC once ``room`` bytes were written."""

    def __init__(self, handle: io.IOBase, room: list[int]) -> None:
        self._handle, self._room = handle, room

    def write(self, data: bytes) -> int:
        if len(data) > self._room[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room[0] -= len(data)
        return self._handle.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._handle, name)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._handle)


@contextlib.contextmanager
def fs_fault(folder: Path, code: int, room: int = 0) -> Iterator[None]:
    """Make writes under ``folder`` fail with ``code``, as the kernel would.

    ``ENOSPC``: writes fail once ``room`` bytes were written (a full disk). Other codes
    (``EROFS``, ``EACCES``): creating, renaming or removing anything there fails (a
    read-only folder, also for root, for whom ``chmod`` does not protect a folder).
    """
    real_open, real_os_open = builtins.open, os.open
    real = {n: getattr(os, n) for n in ("mkdir", "rename", "replace", "unlink", "rmdir")}
    left = [room]

    def fail() -> OSError:
        return OSError(code, os.strerror(code))

    def writes(mode: str) -> bool:
        return any(c in mode for c in "wxa+")

    def fake_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(file, (str, bytes, os.PathLike)) and writes(mode) and _under(file, folder):
            if code != errno.ENOSPC:
                raise fail()
            return _FullFile(real_open(file, mode, *args, **kwargs), left)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if writing and code != errno.ENOSPC and _under(path, folder):
            raise fail()
        return real_os_open(path, flags, *args, **kwargs)

    def guard(name: str) -> Callable[..., object]:
        def fake(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            if code != errno.ENOSPC and _under(path, folder):
                raise fail()
            return real[name](path, *args, **kwargs)

        return fake

    builtins.open = io.open = fake_open  # type: ignore[assignment]
    os.open = fake_os_open  # type: ignore[assignment]
    for name in real:
        setattr(os, name, guard(name))
    try:
        yield
    finally:
        builtins.open = io.open = real_open  # type: ignore[assignment]
        os.open = real_os_open  # type: ignore[assignment]
        for name, function in real.items():
            setattr(os, name, function)


@contextlib.contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """A soft ``RLIMIT_FSIZE`` of ``nbytes``: bigger writes fail with ``EFBIG``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


# --------------------------------------------------------------------------- the table


def load_cases() -> list[Case]:
    """Import the case modules (they register their cases) and return all cases."""
    if not CASES:
        import fault_cases_cli  # noqa: F401
        import fault_cases_core  # noqa: F401
    return CASES


def table(results: list[Result]) -> str:
    """The markdown table of ``results`` with a summary line."""
    lines = [
        f"{len(results)} cases, {sum(r.traceback for r in results)} tracebacks, "
        f"{sum(bool(r.lost) for r in results)} with data lost, "
        f"{sum(r.wrong for r in results)} wrong results.",
        "",
        "| # | class | what was tried | what happens now | traceback | data lost |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        outcome = " ".join(r.outcome.split()).replace("|", "\\|")
        if len(outcome) > 260:
            outcome = outcome[:257] + "..."
        lines.append(
            f"| {r.case.number} | {r.case.cls} {CLASSES[r.case.cls]} | {r.case.tried} | "
            f"{outcome} | {'YES' if r.traceback else 'no'} | "
            f"{', '.join(r.lost) if r.lost else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="markdown file whose table to replace")
    parser.add_argument("-k", help="only cases whose description contains this")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    cases = [c for c in load_cases() if not args.k or args.k in c.tried]
    results = []
    for item in cases:
        result = run_case(item)
        results.append(result)
        flag = "ok " if result.ok else "BAD"
        print(f"{flag} {item.number:>3} {result.seconds:5.1f}s {item.tried}", file=sys.stderr)
        if not result.ok:
            print(f"        {result.outcome[:600]} lost={result.lost}", file=sys.stderr)
    text = table(results)
    if args.write is None:
        print(text)
    else:
        from napari_numsnet.io.atomic import atomic_write_bytes

        doc = args.write.read_text()
        start, end = doc.index(MARK_START) + len(MARK_START), doc.index(MARK_END)
        atomic_write_bytes(args.write, (doc[:start] + "\n" + text + doc[end:]).encode())
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    # The case modules register into the importable module, not into __main__.
    import fault_cases

    sys.exit(fault_cases.main())
