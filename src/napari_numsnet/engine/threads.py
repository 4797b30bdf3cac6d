"""How many CPU threads torch may use: what the machine can give now, not its core count.

Taking every core is the worst choice on a machine that does something else: with one of
two cores held by another process, two torch threads train about 3.5x slower than one
(each parallel region waits for the thread that shares a core). The policy here counts
the cores, subtracts those other processes keep busy (sampled from ``/proc/stat`` minus
this process's own CPU time; the 1-minute load average where there is no ``/proc``) and
those reserved (a core left to the napari viewer), and keeps at least one.

- :func:`apply_threads` measures (a short window), chooses and sets torch's thread count;
  the command line, the plugin, the cohort and the benchmarks call it once at the start.
- :func:`revisit` is called between epochs: it measures over the time since the last
  measurement (no waiting) and changes the count when the load has changed. It does
  nothing when the user fixed the count or when no policy was applied.
- :func:`worker_threads` shares the choice among the cohort's CPU worker processes.
- :func:`choose_threads` is the pure choice, :func:`current` the choice in force, and
  :meth:`ThreadChoice.describe` the text of the device line.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, replace

import torch

from napari_numsnet.errors import NumsnetError

#: Seconds of sampling when a policy is applied (the process is idle meanwhile).
APPLY_WINDOW = 0.25
#: Shortest span over which :func:`revisit` trusts a measurement (shorter: keep waiting).
MIN_REVISIT_SPAN = 1.0
#: A core counts as busy from this fraction of it in use by other processes.
BUSY_FRACTION = 0.5


@dataclass(frozen=True)
class ThreadChoice:
    """The number of torch CPU threads and why.

    Attributes
    ----------
    threads
        Intra-op threads given to torch, at least 1.
    cores
        CPU cores this process may run on.
    busy
        Cores other processes kept busy when measured (rounded; 0 when not measured).
    reserve
        Cores left to others on purpose (1 inside napari, for the viewer).
    requested
        The user's fixed count, or ``None`` for the automatic policy.
    share
        Processes of ours sharing the free cores (``torchrun``'s local ranks on a CPU).
    """

    threads: int
    cores: int
    busy: int = 0
    reserve: int = 0
    requested: int | None = None
    share: int = 1

    @property
    def fixed(self) -> bool:
        """Whether the user fixed the count (then :func:`revisit` leaves it alone)."""
        return self.requested is not None

    def describe(self) -> str:
        """E.g. ``"1 thread (2 cores, 1 busy)"`` or ``"2 threads (set by the user; 2 cores)"``."""
        noun = "thread" if self.threads == 1 else "threads"
        why = [f"{self.cores} core{'s' if self.cores != 1 else ''}"]
        if self.busy:
            why.append(f"{self.busy} busy")
        if self.reserve:
            why.append(f"{self.reserve} left to the viewer")
        text = ", ".join(why)
        if self.fixed:
            text = f"set by the user; {text}"
        return f"{self.threads} {noun} ({text})"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where known), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_threads(requested: int | None) -> int | None:
    """``None`` or ``0``: automatic (``None``); a positive integer: that count.

    Raises
    ------
    NumsnetError
        For a negative or non-integer count.
    """
    if requested is None or (not isinstance(requested, bool) and requested == 0):
        return None
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise NumsnetError(
            f"The number of threads must be a positive integer, got {requested!r}.",
            "Give 1 or more, or 0 to choose from the machine's load.",
        )
    return int(requested)


def choose_threads(
    requested: int | None = None,
    *,
    reserve: int = 0,
    busy: float = 0.0,
    cores: int | None = None,
    share: int = 1,
) -> ThreadChoice:
    """The thread count for ``cores`` cores of which other processes use ``busy``.

    Parameters
    ----------
    requested
        The user's count (used as given), or ``None``/``0`` for ``cores - busy - reserve``.
    reserve
        Cores to leave free (1 inside napari), ``>= 0``.
    busy
        Cores other processes use, in cores (e.g. 0.9); rounded with :data:`BUSY_FRACTION`.
    cores
        Cores available to this process; default :func:`usable_cores`.
    share
        Processes of ours that share the free cores (``torchrun``'s local ranks on a CPU).

    Returns
    -------
    ThreadChoice
        With ``threads >= 1``.
    """
    fixed = check_threads(requested)
    cores = cores or usable_cores()
    reserve = max(0, int(reserve))
    busy_cores = min(cores, max(0, math.floor(max(0.0, busy) + 1.0 - BUSY_FRACTION)))
    free = max(1, cores - busy_cores - reserve)
    threads = fixed if fixed is not None else max(1, free // max(1, int(share)))
    return ThreadChoice(threads, cores, busy_cores, reserve, fixed, max(1, int(share)))


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class CpuSample:
    """A point in time: the machine's busy CPU seconds and this process's own.

    ``machine_busy`` is ``None`` where ``/proc/stat`` cannot be read.
    """

    wall: float
    own: float
    machine_busy: float | None


def _machine_busy_seconds() -> float | None:
    """Seconds all CPUs spent busy since boot (user, nice, system, irq, softirq, steal)."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    ticks = [int(v) for v in fields[1:9]]
    # user nice system idle iowait irq softirq steal (guest is inside user already)
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def read_sample() -> CpuSample:
    """The current :class:`CpuSample`."""
    return CpuSample(time.monotonic(), time.process_time(), _machine_busy_seconds())


def busy_between(before: CpuSample, after: CpuSample, own_threads: int = 0) -> float:
    """Cores other processes used between two samples, ``>= 0``.

    Without ``/proc/stat``: the 1-minute load average minus ``own_threads`` (this
    process's running threads, which the load average counts too).
    """
    span = after.wall - before.wall
    if before.machine_busy is None or after.machine_busy is None or span <= 0:
        try:
            return max(0.0, os.getloadavg()[0] - own_threads)
        except (AttributeError, OSError):
            return 0.0
    others = (after.machine_busy - before.machine_busy) - (after.own - before.own)
    return max(0.0, others / span)


def measure_busy(window: float = APPLY_WINDOW) -> float:
    """Cores other processes use now, sampled over ``window`` seconds (this one idle)."""
    before = read_sample()
    time.sleep(max(0.0, window))
    return busy_between(before, read_sample())


# --------------------------------------------------------------------------- policy

_lock = threading.Lock()
_current: ThreadChoice | None = None
_since: CpuSample | None = None


def apply_threads(
    requested: int | None = None,
    *,
    reserve: int = 0,
    window: float = APPLY_WINDOW,
    share: int = 1,
) -> ThreadChoice:
    """Choose the thread count now, give it to torch and remember the policy.

    Parameters
    ----------
    requested
        The user's count (``--threads N``), or ``None``/``0`` for the automatic policy.
    reserve
        Cores to leave free: 1 inside napari (the viewer), 0 elsewhere.
    window
        Seconds of load sampling for the automatic policy (none for a fixed count).
    share
        Processes of ours sharing the free cores (``torchrun``'s local ranks on a CPU).

    Returns
    -------
    ThreadChoice
        The choice in force, also shown by :func:`~napari_numsnet.engine.device.describe_device`.
    """
    global _current, _since
    fixed = check_threads(requested)
    busy = 0.0 if fixed is not None else measure_busy(window)
    choice = choose_threads(fixed, reserve=reserve, busy=busy, share=share)
    with _lock:
        torch.set_num_threads(choice.threads)
        _current, _since = choice, read_sample()
    return choice


def revisit() -> ThreadChoice | None:
    """Between epochs: re-choose from the load since the last look; the new choice or ``None``.

    Measures over the time since :func:`apply_threads` or the previous call (no waiting),
    and changes torch's count only when the choice differs. Returns ``None`` when nothing
    changed, when the count is fixed by the user, when no policy was applied, when the
    cores are shared with other ranks of ours (``share > 1``), or when less than
    :data:`MIN_REVISIT_SPAN` seconds have passed (the span then keeps growing).
    """
    global _current, _since
    with _lock:
        if _current is None or _current.fixed or _current.share > 1 or _since is None:
            return None  # with ranks of ours beside it, their load is not others' load
        now = read_sample()
        if now.wall - _since.wall < MIN_REVISIT_SPAN:
            return None
        busy = busy_between(_since, now, own_threads=_current.threads)
        _since = now
        choice = choose_threads(None, reserve=_current.reserve, busy=busy, cores=_current.cores)
        if choice.threads == _current.threads:
            _current = replace(_current, busy=choice.busy)
            return None
        torch.set_num_threads(choice.threads)
        _current = choice
        return choice


def current() -> ThreadChoice | None:
    """The choice in force, or ``None`` when no policy was applied in this process.

    ``None`` too when something else changed torch's count since (the choice would lie).
    """
    choice = _current
    if choice is None or choice.threads != torch.get_num_threads():
        return None
    return choice


def worker_threads(workers: int) -> int:
    """Threads for each of ``workers`` CPU worker processes: the choice in force, shared.

    The choice in force (the user's ``--threads`` or the policy's) is divided among the
    workers; without one, the load is measured now (:data:`APPLY_WINDOW` seconds).
    """
    choice = current() or choose_threads(None, busy=measure_busy())
    return max(1, choice.threads // max(1, workers))


def reset() -> None:
    """Forget the policy (torch keeps its current count); for tests and embedding code."""
    global _current, _since
    with _lock:
        _current, _since = None, None
