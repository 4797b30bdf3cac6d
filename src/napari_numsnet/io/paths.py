"""Refuse outputs that would destroy an input.

An output is refused when it is one of the inputs: the same resolved path, or the same
file reached by another name (a hard or symbolic link, another spelling of the path),
which ``os.path.samefile`` tells.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from napari_numsnet.errors import NumsnetError

PathLike = str | os.PathLike[str]


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file (resolved paths, then ``samefile``)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.resolve() == pb.resolve():
            return True
    except OSError:
        pass
    try:
        return os.path.samefile(pa, pb)
    except OSError:
        return False  # one of them does not exist: they cannot be one file


def check_not_input(
    output: PathLike, inputs: Iterable[PathLike | None], option: str = "--output"
) -> Path:
    """Refuse ``output`` when it is one of ``inputs``.

    Parameters
    ----------
    output
        The file to be written.
    inputs
        The files read (``None`` entries are skipped).
    option
        How the user named the output, for the message.

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    NumsnetError
        ``output`` is one of ``inputs``; nothing has been written.
    """
    for item in inputs:
        if item is not None and same_file(output, item):
            raise NumsnetError(
                f"{option} {output} is the input {item}: writing it would destroy the input.",
                f"Give {option} a new file name.",
            )
    return Path(output)
