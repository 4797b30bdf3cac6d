"""Background runs for the controllers, without Qt: a thread and a way back to the GUI.

A controller calls :func:`run_in_thread`; the worker's progress, result and error reach
the controller through ``deliver``, a callable that runs a function where the GUI lives.
Without a GUI (tests, scripts) ``deliver`` calls at once, in the worker thread; the panel
passes :class:`~napari_numsnet._napari.qt_helpers.MainThread`'s ``call``, which queues the
function into Qt's main thread.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

Deliver = Callable[[Callable[[], Any]], None]

_frozen_runs = 0
_frozen_lock = threading.Lock()


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


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep Python's cyclic collector off the objects that exist when a run starts.

    A viewer holds about half a million tracked objects (napari, vispy, Qt wrappers). A
    full collection walks all of them while holding the GIL, 250-400 ms in which the
    viewer cannot paint, and building a model allocates enough to trigger one as a run
    starts. :func:`gc.freeze` takes the existing objects out of the collector's reach for
    the run, so its collections walk only what the run made; when the last overlapping
    run ends they are given back (:func:`gc.unfreeze`), so garbage among them is still
    collected afterwards (the next full collection walks them all again).
    """
    global _frozen_runs
    with _frozen_lock:
        if _frozen_runs == 0:
            gc.freeze()
        _frozen_runs += 1
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_runs -= 1
            if _frozen_runs == 0:
                gc.unfreeze()
