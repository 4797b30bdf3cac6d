"""Helpers for checking that a writer survives being killed (tests and fault scripts).

Nothing of the plugin calls these; they fork, so they need a POSIX system.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable


def kill_during(
    write: Callable[[int], None], seed: int, first: int, longest_delay: float = 0.25
) -> tuple[int, int]:
    """Fork a child that calls ``write(first + 1)``, ``write(first + 2)``, ... and
    reports each number once it returned; SIGKILL it after a random delay.

    Parameters
    ----------
    write
        Writes state number ``n`` (in the child).
    seed
        Seeds the delay, drawn uniformly from ``[0, longest_delay]`` seconds.
    first
        The last number written before; the child goes on from ``first + 1``.
    longest_delay
        Longest delay before the kill, seconds.

    Returns
    -------
    tuple of int
        The last number the child reported complete (``first`` if none) and the
        child's process id (temporaries of a writer often carry it).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write until killed
        os.close(read_end)
        try:
            number = first
            while True:
                number += 1
                write(number)
                os.write(write_end, f"{number}\n".encode())
        finally:
            os._exit(1)
    os.close(write_end)
    time.sleep(random.Random(seed).uniform(0.0, longest_delay))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    reported = b""
    while chunk := os.read(read_end, 65536):
        reported += chunk
    os.close(read_end)
    numbers = [int(n) for n in reported.split()]
    return (numbers[-1] if numbers else first), pid
