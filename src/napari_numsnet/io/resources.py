"""Check what a file's header implies before memory is spent on it.

A 1 KB file whose header claims 10^9 voxels must be refused at once with the number,
not after a 4 GB allocation fails with an empty reason.
"""

from __future__ import annotations

import os

from napari_numsnet.errors import ResourceError

#: Share of the available memory one array may take.
MEMORY_SHARE = 0.8


def available_memory() -> int | None:
    """Bytes of memory the system can still give, or ``None`` if unknown.

    ``MemAvailable`` of ``/proc/meminfo`` on Linux, else free pages times page size
    where the platform tells them.
    """
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def format_bytes(nbytes: float) -> str:
    """``1536`` -> ``'1.5 KiB'``, up to TiB."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TiB"


def check_allocation(nbytes: int, what: str, hint: str) -> None:
    """Refuse an allocation of ``nbytes`` larger than the memory available.

    Parameters
    ----------
    nbytes
        Bytes the allocation would take.
    what
        What would be allocated, e.g. ``"ct.nii.gz's header claims 1000x1000x1000 int32"``.
    hint
        What to do about it.

    Raises
    ------
    ResourceError
        ``nbytes`` is more than :data:`MEMORY_SHARE` of the available memory.
    """
    available = available_memory()
    if available is None or nbytes <= MEMORY_SHARE * available:
        return
    raise ResourceError(
        f"{what}: {format_bytes(nbytes)}, more than the {format_bytes(available)} of memory "
        "available.",
        hint,
    )
