"""Live training plot in the Train panel: loss per step and epoch, validation Dice per class.

pyqtgraph draws the curves with Qt itself: an update replaces the points of the curves
that changed (the step curve; the epoch and Dice curves only after an epoch), with no
figure re-render, and updates are throttled to :data:`REDRAW_MS`, so a fast stream of step
events costs the viewer's event loop next to nothing. The left axes have a fixed width, so
new tick labels never re-lay out the plots.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_numsnet.engine.events import TrainEvent
from napari_numsnet.io.classes import ClassTable, visible_on_grey

BACKGROUND = "#262930"
FOREGROUND = "#d1d2d4"
STEP_COLOR = "#7f8c8d"
REDRAW_MS = 1000
"""The curves are updated at most this often (milliseconds)."""
AXIS_WIDTH = 44
"""Width of the left axes in pixels (fixed: tick labels of any length fit, no re-layout)."""
FALLBACK_COLORS = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#42d4f4")


def _plot(title: str, xlabel: str, ylabel: str) -> pg.PlotWidget:
    widget = pg.PlotWidget(background=BACKGROUND)
    item = widget.getPlotItem()
    item.setTitle(title, color=FOREGROUND, size="10pt")
    for side, text in (("bottom", xlabel), ("left", ylabel)):
        axis = item.getAxis(side)
        axis.setLabel(text, color=FOREGROUND)
        axis.setTextPen(FOREGROUND)
        axis.setPen("#5a5f6b")
    item.getAxis("left").setWidth(AXIS_WIDTH)
    item.showGrid(x=True, y=True, alpha=0.15)
    item.setMenuEnabled(False)
    widget.setMinimumHeight(150)
    widget.setMaximumHeight(210)  # both plots fit under the Train tab's settings
    return widget


class TrainingPlot(QWidget):
    """Training loss (per step, thin; epoch means, dots) above validation Dice per class.

    Continued training extends the curves (steps and epochs keep counting).
    """

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.loss_plot = _plot("training loss", "step", "loss")
        self.dice_plot = _plot("validation Dice per class", "epoch", "Dice")
        self.dice_plot.getPlotItem().setYRange(0.0, 1.05)
        self.loss_legend = self.loss_plot.getPlotItem().addLegend(offset=(-5, 5))
        self.dice_legend = self.dice_plot.getPlotItem().addLegend(offset=(5, -5))
        for legend in (self.loss_legend, self.dice_legend):
            legend.setLabelTextColor(FOREGROUND)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.dice_plot)
        self.setMinimumHeight(300)
        self.classes: ClassTable | None = None
        self.steps: list[tuple[int, float]] = []
        self.epochs: list[tuple[int, float]] = []
        self.dice: dict[str, list[tuple[int, float]]] = {}
        self.redraws = 0
        self._step_offset = 0
        self._step_curve = self.loss_plot.plot(pen=pg.mkPen(STEP_COLOR, width=1), name="step")
        self._step_curve.setClipToView(True)  # long runs: only the visible points,
        self._step_curve.setDownsampling(auto=True, method="peak")  # at most ~ one per pixel
        self._drawn: dict[object, int] = {}  # curve -> number of points it shows
        self._epoch_curve = self.loss_plot.plot(
            pen=pg.mkPen(FOREGROUND, width=1.5),
            symbol="o",
            symbolSize=5,
            symbolBrush=FOREGROUND,
            name="epoch mean",
        )
        self._dice_curves: dict[str, pg.PlotDataItem] = {}
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
            for curve in self._dice_curves.values():
                self.dice_plot.removeItem(curve)
                self.dice_legend.removeItem(curve)
            self._dice_curves = {}
        self._drawn = {}
        self._step_offset = self.steps[-1][0] if self.steps else 0
        self._redraw()

    def add_event(self, event: TrainEvent) -> None:
        """Add one engine event to the curves (drawn within :data:`REDRAW_MS`)."""
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

    def color(self, name: str) -> str:
        """The curve colour of class ``name``: its class colour, readable on the dark plot."""
        if self.classes is not None and name in self.classes.names:
            color = self.classes.colors[self.classes.names.index(name)]
            if visible_on_grey(color):
                return color
        return FALLBACK_COLORS[len(self._dice_curves) % len(FALLBACK_COLORS)]

    def _redraw(self) -> None:
        self._timer.stop()
        self.redraws += 1
        self._set_points(self._step_curve, self.steps)
        self._set_points(self._epoch_curve, self.epochs)
        for name, points in self.dice.items():
            curve = self._dice_curves.get(name)
            if curve is None:
                color = self.color(name)
                curve = self.dice_plot.plot(
                    pen=pg.mkPen(color, width=2),
                    symbol="o",
                    symbolSize=6,
                    symbolBrush=color,
                    name=name,
                )
                self._dice_curves[name] = curve
            self._set_points(curve, points)

    def _set_points(self, curve: pg.PlotDataItem, points: list[tuple[int, float]]) -> None:
        """Give ``curve`` its points, unless it already shows them all (the lists only grow
        between resets)."""
        if self._drawn.get(curve) == len(points):
            return
        self._drawn[curve] = len(points)
        xy = np.array(points, dtype=float).reshape(-1, 2)
        curve.setData(xy[:, 0], xy[:, 1])
