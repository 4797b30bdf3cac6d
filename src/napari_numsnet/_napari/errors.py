"""Errors reach the user as napari notifications, never as a frozen or crashed panel."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from napari.utils.notifications import show_error

from napari_numsnet.errors import NumsnetError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("napari_numsnet")


def message(exc: BaseException) -> str:
    """The text shown for ``exc``: the core's problem and fix, or the exception's type."""
    if isinstance(exc, NumsnetError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def report(exc: BaseException) -> None:
    """Show ``exc`` as an error notification (unexpected errors are logged with a traceback)."""
    if not isinstance(exc, NumsnetError):
        log.error("napari-numsnet: unexpected error", exc_info=exc)
    show_error(message(exc))


def reported(func: F) -> F:
    """Run a button callback; any exception becomes a notification instead of escaping."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            report(exc)
            return None

    return wrapper  # type: ignore[return-value]
