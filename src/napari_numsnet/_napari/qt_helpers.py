"""Small Qt pieces shared by the panels: a layer chooser, the slice strip, the autosave timer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from qtpy.QtCore import QObject, QRectF, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QComboBox, QLabel, QPushButton, QSizePolicy, QWidget

from .errors import report

AUTOSAVE_DELAY_MS = 1500
"""Annotations are saved this long after the last edit."""


class LayerCombo(QComboBox):
    """Chooses a layer of one type from the viewer, following additions, removals, renames.

    Parameters
    ----------
    viewer
        The napari viewer.
    layer_type
        ``napari.layers.Image`` or ``napari.layers.Labels``.
    none_text
        Entry meaning "no layer" (first), or ``None`` for no such entry.
    """

    layer_changed = Signal(object)

    def __init__(
        self,
        viewer: Any,
        layer_type: type,
        none_text: str | None = None,
        parent=None,
        accept: Callable[[Any], bool] | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer, self.layer_type, self.none_text = viewer, layer_type, none_text
        self.accept = accept or (lambda layer: True)
        self._current: Any = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        for name in ("inserted", "removed", "moved"):
            getattr(viewer.layers.events, name).connect(self._refresh)
        self.currentIndexChanged.connect(self._on_index)
        self._refresh()

    def layers(self) -> list[Any]:
        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, self.layer_type) and self.accept(layer)
        ]

    def current_layer(self) -> Any:
        return self._current

    def set_layer(self, layer: Any) -> None:
        """Select ``layer`` (or the "no layer" entry for ``None``)."""
        self._refresh()
        names = [self.itemText(i) for i in range(self.count())]
        target = self.none_text if layer is None else layer.name
        if target in names:
            self.setCurrentIndex(names.index(target))

    def _refresh(self, event: Any = None) -> None:
        with contextlib.suppress(RuntimeError):  # the widget is gone; the viewer lives on
            for layer in self.layers():
                layer.events.name.connect(self._refresh)
            names = ([self.none_text] if self.none_text else []) + [
                layer.name for layer in self.layers()
            ]
            keep = self._current.name if self._current is not None else self.none_text
            self.blockSignals(True)
            self.clear()
            self.addItems(names)
            if keep in names:
                self.setCurrentIndex(names.index(keep))
            self.blockSignals(False)
            self._on_index(self.currentIndex())

    def _on_index(self, index: int) -> None:
        name = self.itemText(index) if index >= 0 else None
        layer = None
        if name and name != self.none_text and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer = layer if self.accept(layer) else None
        if layer is not self._current:
            self._current = layer
            self.layer_changed.emit(layer)


class SliceStrip(QWidget):
    """One cell per slice along the stack: planned, painted, annotated, current.

    Outlined in blue: planned for training; in orange: planned for validation. Filled
    green: annotated (counts as ground truth); filled grey: painted, not marked done. The
    current slice has a white bar beneath. After a prediction, the cells not yet annotated
    are tinted red by their correction score (:meth:`set_scores`) and the suggested slice
    has a red bar above. Clicking a cell emits ``clicked(z)``.
    """

    clicked = Signal(int)
    COLORS: ClassVar[dict[str, QColor]] = {
        "train": QColor("#3c8dde"),
        "val": QColor("#f39c12"),
        "done": QColor("#2ecc71"),
        "painted": QColor("#7f8c8d"),
        "current": QColor("#ffffff"),
        "empty": QColor("#3a3f4b"),
        "score": QColor("#e74c3c"),
    }

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.n, self.current = 0, -1
        self.train: set[int] = set()
        self.val: set[int] = set()
        self.done: set[int] = set()
        self.painted: set[int] = set()
        self.scores: dict[int, float] = {}
        self.suggested = -1
        self.setMinimumHeight(26)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_state(
        self,
        n: int,
        train: Iterable[int] = (),
        val: Iterable[int] = (),
        done: Iterable[int] = (),
        painted: Iterable[int] = (),
        current: int = -1,
    ) -> None:
        self.n, self.current = n, current
        self.train, self.val = {int(z) for z in train}, {int(z) for z in val}
        self.done, self.painted = {int(z) for z in done}, {int(z) for z in painted}
        self.update()

    def set_scores(self, scores: dict[int, float], suggested: int = -1) -> None:
        """Tint slices by ``scores`` (slice -> score in [0, 1]) and mark ``suggested``."""
        self.scores = {int(z): float(v) for z, v in scores.items()}
        self.suggested = int(suggested)
        self.update()

    def tint(self, z: int, base: QColor) -> QColor:
        """``base`` blended towards red by slice ``z``'s score."""
        t = min(max(self.scores.get(z, 0.0), 0.0), 1.0)
        hot = self.COLORS["score"].getRgb()[:3]
        return QColor(*(int(a + (b - a) * t) for a, b in zip(base.getRgb()[:3], hot, strict=True)))

    def _cell(self, z: int) -> QRectF:
        width = max(self.width() - 2, 1) / max(self.n, 1)
        return QRectF(1 + z * width, 4, max(width - 1, 1), self.height() - 11)

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        for z in range(self.n):
            rect = self._cell(z)
            key = "done" if z in self.done else "painted" if z in self.painted else "empty"
            color = self.COLORS[key]
            painter.fillRect(rect, color if key == "done" else self.tint(z, color))
            if z == self.suggested and z not in self.done:
                painter.fillRect(QRectF(rect.left(), 0, rect.width(), 3), self.COLORS["score"])
            if z in self.train or z in self.val:
                painter.setPen(QPen(self.COLORS["train" if z in self.train else "val"], 2))
                painter.drawRect(rect.adjusted(1, 1, -1, -1))
            if z == self.current:
                bar = QRectF(rect.left(), rect.bottom() + 2, rect.width(), 4)
                painter.fillRect(bar, self.COLORS["current"])
        painter.end()

    def mousePressEvent(self, event: Any) -> None:
        if self.n and event.button() == Qt.MouseButton.LeftButton:
            x = event.position().x() if hasattr(event, "position") else event.x()
            z = int((x - 1) / (max(self.width() - 2, 1) / self.n))
            self.clicked.emit(min(max(z, 0), self.n - 1))


def strip_legend() -> QLabel:
    """A one-line legend of :class:`SliceStrip`'s marks."""
    c = SliceStrip.COLORS

    def box(color: QColor, text: str, filled: bool = True) -> str:
        mark = "&#9632;" if filled else "&#9633;"  # a filled or an outlined square
        weight = "" if filled else "font-weight:bold;"
        return f'<span style="color:{color.name()};{weight}">{mark}</span>&nbsp;{text}'

    parts = [
        box(c["train"], "train", filled=False),
        box(c["val"], "validation", filled=False),
        box(c["done"], "done"),
        box(c["painted"], "painted, not done"),
        box(c["current"], "current"),
        box(c["score"], "uncertain"),
    ]
    label = QLabel(" &nbsp;".join(parts))
    label.setWordWrap(True)
    label.setToolTip(
        "Outlined: planned for training (blue) or validation (orange). Filled green: counts "
        "as ground truth; grey: painted but not marked done. White bar: the current slice. "
        "After a prediction, red: how much correcting the slice should help (red bar above: the "
        "suggested slice)."
    )
    return label


HIGHLIGHT_STYLE = "QPushButton { border: 2px solid #3c8dde; font-weight: bold; }"


def highlight(button: QPushButton, on: bool) -> None:
    """Outline ``button`` as the next step to take (or remove the outline)."""
    style = HIGHLIGHT_STYLE if on else ""
    if button.styleSheet() != style:
        button.setStyleSheet(style)
    button.setProperty("next_step", on)


class MainThread(QObject):
    """Runs functions in Qt's main thread, whichever thread asks (``deliver`` of
    :mod:`.tasks`): a queued signal carries each function across."""

    _call = Signal(object)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._call.connect(self._run, Qt.ConnectionType.QueuedConnection)

    def call(self, func: Callable[[], Any]) -> None:
        self._call.emit(func)

    def _run(self, func: Callable[[], Any]) -> None:
        try:
            func()
        except Exception as exc:
            report(exc)


class Autosaver(QObject):
    """Calls ``save`` once, ``delay_ms`` after the last :meth:`schedule` (debounced).

    Errors while saving become notifications and ``failed`` (the message); ``saved``
    carries the folder written.
    """

    saved = Signal(object)
    failed = Signal(str)

    def __init__(
        self, save: Callable[[], Path | None], delay_ms: int = AUTOSAVE_DELAY_MS, parent=None
    ) -> None:
        super().__init__(parent)
        self._save = save
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.save_now)

    @property
    def pending(self) -> bool:
        return self.timer.isActive()

    def schedule(self, *args: Any) -> None:
        self.timer.start()

    def flush(self) -> None:
        """Save now if a save is pending."""
        if self.timer.isActive():
            self.save_now()

    def save_now(self) -> None:
        self.timer.stop()
        try:
            folder = self._save()
        except Exception as exc:
            report(exc)
            self.failed.emit(str(exc))
            return
        if folder is not None:
            self.saved.emit(folder)
