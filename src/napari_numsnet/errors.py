"""The one error type the core raises for bad input.

Every message says what was wrong and what to do about it, so that the command line
and the napari widgets can show it to the user as it is.
"""

from __future__ import annotations


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
