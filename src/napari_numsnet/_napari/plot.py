"""Live training plot in the Train panel: loss per step and epoch, validation Dice per class."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from qtpy.QtCore import QTimer

from napari_numsnet.engine.events import TrainEvent
from napari_numsnet.io.classes import ClassTable

BACKGROUND = "#262930"
FOREGROUND = "#d1d2d4"
REDRAW_MS = 250


class TrainingPlot(FigureCanvasQTAgg):
    """Training loss (per step, thin; epoch means, dots) above validation Dice per class.

    Redraws at most every ``REDRAW_MS`` so a fast stream of step events costs little.
    Continued training extends the curves (steps and epochs keep counting).
    """

    def __init__(self, parent=None) -> None:
        self.figure = Figure(figsize=(4.0, 4.4), dpi=90, facecolor=BACKGROUND)
        super().__init__(self.figure)
        self.setParent(parent)
        self.setMinimumHeight(340)
        self.loss_ax = self.figure.add_subplot(2, 1, 1)
        self.dice_ax = self.figure.add_subplot(2, 1, 2)
        self.figure.subplots_adjust(left=0.13, right=0.97, top=0.94, bottom=0.1, hspace=0.45)
        self.classes: ClassTable | None = None
        self.steps: list[tuple[int, float]] = []
        self.epochs: list[tuple[int, float]] = []
        self.dice: dict[str, list[tuple[int, float]]] = {}
        self._step_offset = 0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        self.reset()

    def reset(self, classes: ClassTable | None = None, keep_history: bool = False) -> None:
        """Clear the plot; ``keep_history`` continues the curves (continued training)."""
        self.classes = classes or self.classes
        if not keep_history:
            self.steps, self.epochs, self.dice = [], [], {}
        self._step_offset = self.steps[-1][0] if self.steps else 0
        self._redraw()

    def add_event(self, event: TrainEvent) -> None:
        """Add one engine event to the curves."""
        if event.kind == "step" and event.loss is not None:
            self.steps.append((self._step_offset + event.step, event.loss))
        elif event.kind == "epoch":
            if event.loss is not None:
                self.epochs.append((self._step_offset + event.step, event.loss))
            for name, value in event.val_dice.items():
                self.dice.setdefault(name, []).append((event.epoch, value))
        elif event.kind == "end":
            self._redraw()
            return
        if not self._timer.isActive():
            self._timer.start()

    def _color(self, name: str) -> str:
        if self.classes is not None and name in self.classes.names:
            color = self.classes.colors[self.classes.names.index(name)]
            return FOREGROUND if color.lower() in ("#000000", "#000") else color
        return FOREGROUND

    def _style(self, ax, title: str, xlabel: str) -> None:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_facecolor(BACKGROUND)
        ax.set_title(title, color=FOREGROUND, fontsize=9)
        ax.set_xlabel(xlabel, color=FOREGROUND, fontsize=8, labelpad=1)
        ax.tick_params(colors=FOREGROUND, labelsize=7)
        for spine in ax.spines.values():
            spine.set_color("#5a5f6b")

    def _redraw(self) -> None:
        self._timer.stop()
        self.loss_ax.clear()
        self.dice_ax.clear()
        self._style(self.loss_ax, "training loss", "step")
        self._style(self.dice_ax, "validation Dice per class", "epoch")
        if self.steps:
            xs, ys = zip(*self.steps, strict=True)
            self.loss_ax.plot(xs, ys, color="#7f8c8d", lw=0.8, label="step")
        if self.epochs:
            xs, ys = zip(*self.epochs, strict=True)
            self.loss_ax.plot(xs, ys, "o-", color=FOREGROUND, ms=2.5, lw=1, label="epoch mean")
        for name, points in self.dice.items():
            xs, ys = zip(*points, strict=True)
            self.dice_ax.plot(xs, ys, "o-", ms=2.5, lw=1, color=self._color(name), label=name)
        self.dice_ax.set_ylim(0, 1.05)
        for ax in (self.loss_ax, self.dice_ax):
            if ax.lines:
                legend = ax.legend(
                    fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), framealpha=0.0
                )
                for text in legend.get_texts():
                    text.set_color(FOREGROUND)
        self.figure.subplots_adjust(right=0.75 if self.dice or self.steps else 0.97)
        self.draw_idle()
