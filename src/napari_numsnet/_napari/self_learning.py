"""Self-learning levels (DRSegUNet thesis 4.4.2) on the k-means pseudo-labels, in a worker.

Level 1 trains from scratch on the pseudo-labels, level 2 fine-tunes it on level 1's
predictions, and so on; each finished level appears as its own Labels layer,
``<image> level N`` (``(collapsed)`` added when the core's collapse guard fired), so the
user sees every level and can accept any slice of any level into the annotations.
The network, slice size, device and step budget are the Train tab's (a number of steps
per level may be set here instead); the learning rate and the number of levels are set
here. The classes are weighted by their frequency (``SelfLearningConfig.class_weights``),
so that the small k-means classes are learned.
"""

from __future__ import annotations

import threading
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_numsnet import pipeline
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable

from . import layers as L
from .errors import report, reported
from .pseudo import PseudoController, pseudo_classes
from .training import TrainController

try:  # the loop lives in the core's pseudolabel package; without it the panel says so
    from napari_numsnet.workflows.selflearn import SelfLearningConfig, self_learning
except ImportError:  # pragma: no cover - depends on the installed core
    self_learning = None


class SelfLearningController(QObject):
    """Runs :func:`napari_numsnet.workflows.selflearn.self_learning` and shows each level."""

    running_changed = Signal(bool)
    progress = Signal(object)
    level_done = Signal(object)
    finished = Signal(object)
    _level = Signal(object)
    _event = Signal(object)

    def __init__(
        self, pseudo: PseudoController, training: TrainController, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.pseudo, self.training = pseudo, training
        self.levels, self.learning_rate = 2, 9.8e-4
        self.steps = 0  # 0: the Train tab's step budget
        self.result: Any = None
        self.worker: Any = None
        self.running = False
        self._stop = threading.Event()
        self._level.connect(self._on_level)
        self._event.connect(self.progress.emit)

    def start(self) -> Any:
        """Run the loop on the current image in a worker thread; returns the started worker."""
        if self.running:
            raise NumsnetError("Self-learning is running.", "Wait for it or press Stop.")
        image = self.pseudo.annotation.image
        if image is None:
            raise NumsnetError("No image is chosen.", "Choose the image in the Annotate tab.")
        kmeans = self.pseudo.config
        s = self.training.settings
        model = s.model.replace(num_classes=kmeans.k + 1, exclusive=True)
        training = s.training.replace(learning_rate=self.learning_rate)
        if self.steps:
            training = training.replace(steps=self.steps, steps_per_slice=0)
        stack = L.stack_of(image)
        self._stop.clear()
        worker = create_worker(
            self_learning,
            stack,
            model,
            training,
            kmeans,
            SelfLearningConfig(levels=self.levels),
            preprocess=pipeline.default_preprocess(stack, s.preprocess),
            classes=pseudo_classes(kmeans.k),
            callback=self._event.emit,
            stop_event=self._stop,
            on_level=self._level.emit,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(self._on_returned)
        worker.errored.connect(report)
        worker.finished.connect(lambda: self._set_running(False))
        self.worker, self._image = worker, image
        self._set_running(True)
        worker.start()
        return worker

    def stop(self) -> None:
        self._stop.set()

    def _set_running(self, running: bool) -> None:
        self.running = running
        self.running_changed.emit(running)

    def _on_level(self, level: Any) -> None:
        if level.level > 0:  # level 0 is the k-means result, already its own layer
            name = f"{self._image.name} level {level.level}"
            name += " (collapsed)" if level.collapsed else ""
            classes = ClassTable.from_names(level.checkpoint.class_names)
            self.pseudo.show_labels(level.labels, self._image, name, classes)
        self.level_done.emit(level)

    def _on_returned(self, result: Any) -> None:
        self.result = result
        self.finished.emit(result)


class SelfLearningPanel(QGroupBox):
    """Levels, steps and learning rate of the loop; Run, Stop, progress and notes."""

    def __init__(self, controller: SelfLearningController, parent=None) -> None:
        super().__init__("Self-learning levels", parent)
        self.controller = controller
        self.levels = QSpinBox(minimum=1, maximum=5, value=controller.levels)
        self.steps = QSpinBox(minimum=0, maximum=100_000, value=controller.steps)
        self.steps.setSingleStep(100)
        self.steps.setSpecialValueText("Train tab's budget")
        self.steps.setToolTip(
            "Optimiser steps of each level. The lowest value gives level 1 the Train tab's "
            "budget (the fast preset's steps per annotated slice, or the epochs it is set "
            "to) and each later level as many steps as level 1 ran."
        )
        self.learning_rate = QDoubleSpinBox(decimals=6, minimum=1e-6, maximum=1.0)
        self.learning_rate.setValue(controller.learning_rate)
        self.run_button, self.stop_button = QPushButton("Run levels"), QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.status = QLabel("Level 1 trains on the pseudo-labels, level 2 fine-tunes on level 1.")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Levels", self.levels)
        form.addRow("Steps per level", self.steps)
        form.addRow("Learning rate", self.learning_rate)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        self.run_button.clicked.connect(lambda *_: self._run())
        self.stop_button.clicked.connect(lambda *_: controller.stop())
        controller.running_changed.connect(self._on_running)
        controller.progress.connect(self._on_event)
        controller.level_done.connect(self._on_level)
        controller.finished.connect(lambda result: self.status.setText(" ".join(result.notes)))

    @reported
    def _run(self) -> None:
        c = self.controller
        c.levels, c.steps = self.levels.value(), self.steps.value()
        c.learning_rate = self.learning_rate.value()
        c.start()

    def _on_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _on_event(self, event: Any) -> None:
        if event.total_steps:
            self.progress_bar.setMaximum(event.total_steps)
            self.progress_bar.setValue(event.step)
        if event.kind == "epoch":
            self.status.setText(
                f"{event.message or ''} epoch {event.epoch}, loss {event.loss:.3f}"
            )

    def _on_level(self, level: Any) -> None:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in level.class_fractions.items())
        text = f"Level {level.level}: lung shares {shares}."
        self.status.setText(text + (f" {level.reason}" if level.collapsed else ""))


def self_learning_panel(pseudo: PseudoController, training: TrainController) -> QWidget:
    """The self-learning controls, or a note when the core has no self-learning loop."""
    if self_learning is None:
        label = QLabel("Self-learning levels are not available in this version.")
        label.setWordWrap(True)
        return label
    return SelfLearningPanel(SelfLearningController(pseudo, training, pseudo))
