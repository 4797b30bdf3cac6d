"""Keyboard shortcuts of the panel, bound through napari's viewer keybindings (no Qt here).

Shift with a letter that napari leaves free in 2D: they work whichever layer is selected
and are listed in napari's keybinding preferences with the viewer's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SHORTCUTS: dict[str, tuple[str, str]] = {
    "done": ("Shift-D", "Done and next"),
    "next": ("Shift-N", "Next planned slice"),
    "accept": ("Shift-A", "Accept this slice"),
    "suggest": ("Shift-S", "Next suggested slice"),
    "train": ("Shift-T", "Train / Stop"),
}
"""``{action: (napari key, what it does)}``."""


def with_shortcut(tip: str, action: str) -> str:
    """``tip`` followed by the action's key, for a tooltip."""
    key = SHORTCUTS[action][0].replace("-", "+")
    return f"{tip} ({key})"


def bind_shortcuts(viewer: Any, actions: dict[str, Callable[[], Any]]) -> Callable[[], None]:
    """Bind each ``action`` of :data:`SHORTCUTS` on ``viewer``; returns the unbinding.

    Parameters
    ----------
    viewer
        The napari viewer.
    actions
        ``{action: callable without arguments}``; an action raising an error is reported
        by the callable itself.
    """
    keys: list[str] = []
    for action, call in actions.items():
        key = SHORTCUTS[action][0]

        def handler(_viewer: Any, call: Callable[[], Any] = call) -> None:
            call()

        viewer.bind_key(key, handler, overwrite=True)
        keys.append(key)

    def unbind() -> None:
        for key in keys:
            viewer.bind_key(key, None)

    return unbind
