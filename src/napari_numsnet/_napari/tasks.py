"""Background runs for the controllers, without Qt: a thread and a way back to the GUI.

A controller calls :func:`run_in_thread`; the worker's progress, result and error reach
the controller through ``deliver``, a callable that runs a function where the GUI lives.
Without a GUI (tests, scripts) ``deliver`` calls at once, in the worker thread; the panel
passes :class:`~napari_numsnet._napari.qt_helpers.MainThread`'s ``call``, which queues the
function into Qt's main thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

Deliver = Callable[[Callable[[], Any]], None]


def call_now(func: Callable[[], Any]) -> None:
    """The ``deliver`` without a GUI: call ``func`` at once."""
    func()


def run_in_thread(
    func: Callable[[], Any],
    on_returned: Callable[[Any], None],
    on_error: Callable[[BaseException], None],
    deliver: Deliver = call_now,
    name: str = "numsnet-worker",
) -> threading.Thread:
    """Start ``func()`` in a daemon thread; its result or exception is delivered.

    Returns
    -------
    threading.Thread
        The started thread (``is_alive()`` while ``func`` runs).
    """

    def body() -> None:
        try:
            result = func()
        except BaseException as exc:  # every failure reaches the user
            _safely(deliver, lambda error=exc: on_error(error))
            return
        _safely(deliver, lambda: on_returned(result))

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread


def _safely(deliver: Deliver, func: Callable[[], Any]) -> None:
    """Deliver ``func``; a GUI closed meanwhile (its Qt object deleted) is not an error."""
    with contextlib.suppress(RuntimeError):
        deliver(func)
