"""Predict & correct tab: predict the stack or a slice range, accept corrected slices, retrain."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import get_spec
from napari_numsnet.models.base import ModelKind
from napari_numsnet.workflows.cascade import Cascade
from napari_numsnet.workflows.retrain import DEFAULT_BUDGET_STEPS, RetrainResult

from .errors import reported
from .prediction import PredictController
from .shortcuts import with_shortcut

DIRECTIONS = ("forward", "backward", "both")


def model_title(name: str) -> str:
    """The paper's name of a registry model (``drsegunet`` -> ``DRSegUNet``)."""
    try:
        return get_spec(name).title
    except NumsnetError:
        return name


class PredictWidget(QWidget):
    """Lays out the prediction controls; every action is one call into the controller."""

    def __init__(self, controller: PredictController, retrain: Any, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.whole = QCheckBox("whole stack")
        self.whole.setChecked(True)
        self.start = QSpinBox()
        self.stop = QSpinBox()
        self.direction = QComboBox()
        self.direction.addItems(DIRECTIONS)
        self.direction.setToolTip(
            "Order in which NUMSnet-family models carry features along the stack; a model "
            "trained on runs in both orders predicts best with both averaged."
        )
        self.probabilities = QCheckBox("per-class probability layers")
        self.largest = QListWidget()
        self.largest.setToolTip(
            "Keep only the largest 3D connected piece of the ticked classes, for structures "
            "that are one piece (a heart chamber, the liver); leave paired organs (lungs, "
            "kidneys) unticked. A new model comes with the classes ticked for which this "
            "raised the Dice of its validation slices. The probability layers stay as "
            "predicted."
        )
        self.predict_button = QPushButton("Predict")
        self.accept_button = QPushButton("Accept this slice into the annotations")
        self.accept_button.setToolTip(
            with_shortcut(
                "After correcting this slice of the prediction, make it ground truth.", "accept"
            )
        )
        self.suggest_button = QPushButton("Next suggested slice")
        self.suggest_button.setToolTip(
            with_shortcut(
                "Go to the slice whose correction should help most (red in the strip).",
                "suggest",
            )
        )
        self.retrain_button = QPushButton("Retrain (continue with the new annotations)")
        self.retrain_steps = QSpinBox()
        self.retrain_steps.setRange(1, 100_000)
        self.retrain_steps.setValue(DEFAULT_BUDGET_STEPS)
        self.retrain_steps.setSuffix(" steps")
        self.retrain_steps.setToolTip(
            "Optimiser steps of one retrain: it continues the last weights, so a few dozen "
            "take an accepted slice in within seconds on a CPU."
        )
        self.status = QLabel()
        self.status.setWordWrap(True)
        self._n = -1
        self._ticked_for: object = None  # the model whose own choice the ticks started from
        self._build()
        self.predict_button.clicked.connect(lambda *_: self._predict())
        self.accept_button.clicked.connect(lambda *_: self._accept())
        self.suggest_button.clicked.connect(lambda *_: self._next_suggested())
        self.retrain_button.clicked.connect(lambda *_: reported(retrain)())
        self.whole.toggled.connect(self.start.setDisabled)
        self.whole.toggled.connect(self.stop.setDisabled)
        self.whole.toggled.emit(True)
        controller.running_changed.connect(self.refresh)
        controller.predicted.connect(
            lambda layer: self.status.setText(
                f"Predicted into {layer.name!r}. Correct a slice there, then accept it."
            )
        )
        controller.training.checkpoint_changed.connect(lambda *_: self.refresh())
        controller.training.retrained.connect(self._show_retrained)
        controller.annotation.changed.connect(self.refresh)
        self.refresh()

    def _build(self) -> None:
        load = QPushButton("Load checkpoint…")
        load.clicked.connect(lambda *_: self._load())
        span = QHBoxLayout()
        for widget in (QLabel("from"), self.start, QLabel("to"), self.stop):
            span.addWidget(widget)
        form = QFormLayout()
        form.addRow("Model", self.model_label)
        form.addRow("", load)
        form.addRow("Slices", self.whole)
        form.addRow("", span)
        form.addRow("Direction", self.direction)
        form.addRow("", self.probabilities)
        form.addRow("Largest piece only", self.largest)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        buttons = (self.predict_button, self.suggest_button, self.accept_button)
        for widget in buttons:
            layout.addWidget(widget)
        retrain_row = QHBoxLayout()
        retrain_row.addWidget(self.retrain_button, 1)
        retrain_row.addWidget(self.retrain_steps)
        layout.addLayout(retrain_row)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def write_settings(self) -> None:
        """Copy the fields into the controller's settings."""
        s = self.controller.settings
        s.config = s.config.replace(
            direction=self.direction.currentText(), largest_component=self.largest_values()
        )
        s.slice_range = None if self.whole.isChecked() else (self.start.value(), self.stop.value())
        s.probabilities = self.probabilities.isChecked()

    def largest_values(self) -> tuple[int, ...]:
        """Label values of the classes ticked under "Largest piece only"."""
        items = (self.largest.item(row) for row in range(self.largest.count()))
        return tuple(
            int(item.data(Qt.ItemDataRole.UserRole))
            for item in items
            if item.checkState() == Qt.CheckState.Checked
        )

    def _tick(self, values: tuple[int, ...]) -> None:
        """Tick exactly the classes of ``values``."""
        for row in range(self.largest.count()):
            item = self.largest.item(row)
            on = int(item.data(Qt.ItemDataRole.UserRole)) in values
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def _offer_classes(self, class_names: list[str]) -> None:
        """One tick box per foreground class; the ticks are kept by class name."""
        names = [self.largest.item(row).text() for row in range(self.largest.count())]
        self.largest.setEnabled(len(class_names) > 1)
        if names == class_names[1:]:
            return
        values = set(self.largest_values())
        ticked = {name for value, name in enumerate(names, start=1) if value in values}
        self.largest.clear()
        for value, name in enumerate(class_names[1:], start=1):
            item = QListWidgetItem(name)
            item.setData(Qt.ItemDataRole.UserRole, value)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            checked = Qt.CheckState.Checked if name in ticked else Qt.CheckState.Unchecked
            item.setCheckState(checked)
            self.largest.addItem(item)
        row_height = self.largest.sizeHintForRow(0) if self.largest.count() else 18
        self.largest.setMaximumHeight(row_height * max(1, self.largest.count()) + 6)

    def _show_retrained(self, result: RetrainResult) -> None:
        text = f"Retrained {result.steps} steps in {result.seconds:.0f} s"
        if result.dice_before:
            text += (
                f"; validation Dice {result.mean_before:.3f} -> {result.mean_after:.3f} ("
                + ", ".join(
                    f"{name} {result.dice_before[name]:.2f} -> {result.dice_after[name]:.2f}"
                    for name in result.dice_after
                    if name != "background"
                )
                + ")"
            )
        else:
            text += " (no validation slice to score)"
        self.status.setText(text + ". Predict again to see the change.")

    @reported
    def _predict(self) -> None:
        self.write_settings()
        self.controller.start()

    @reported
    def _next_suggested(self) -> None:
        z = self.controller.next_suggested()
        self.status.setText(f"Slice {z} is suggested: correct it, then accept it.")

    @reported
    def _accept(self) -> None:
        z = self.controller.accept()
        self.status.setText(f"Slice {z} is now ground truth in the annotations.")

    @reported
    def _load(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Checkpoint", "", "*.numsnet.pt *.pt")
        if path:
            self.controller.training.load(path)

    def refresh(self, *args: Any) -> None:
        c = self.controller
        image = c.annotation.image
        n = image.data.shape[0] if image is not None else 0
        if n != self._n:  # another image: offer its whole stack
            self._n = n
            self.start.setRange(0, max(n - 1, 0))
            self.stop.setRange(1, max(n, 1))
            self.start.setValue(0)
            self.stop.setValue(max(n, 1))
        checkpoint = c.training.checkpoint
        self._offer_classes([] if checkpoint is None else list(checkpoint.class_names))
        if checkpoint is not None and checkpoint is not self._ticked_for:
            self._ticked_for = checkpoint
            self._tick(checkpoint.largest_component)
            self.direction.setCurrentText(checkpoint.direction)  # its trained direction
            kind = get_spec(checkpoint.model_config.name).kind
            self.direction.setEnabled(kind is ModelKind.SEQUENCE)
        if checkpoint is None:
            self.model_label.setText("No trained model yet.")
        else:
            if isinstance(checkpoint, Cascade):
                region = model_title(checkpoint.region.model_config.name)
                inner = model_title(checkpoint.inner.model_config.name)
                name = f"CHS-Net cascade {region} → {inner}"
            else:
                name = model_title(checkpoint.model_config.name)
            steps = checkpoint.record.get("steps_done")
            trained = f"{steps} steps" if steps else f"{checkpoint.epochs_done} epoch(s)"
            self.model_label.setText(
                f"{name}, classes {', '.join(checkpoint.class_names[1:])}; {trained}."
            )
        self.predict_button.setEnabled(not c.running and checkpoint is not None)
        self.predict_button.setText("Predicting…" if c.running else "Predict")
        self.accept_button.setEnabled(c.annotation.labels is not None)
        self.suggest_button.setEnabled(not c.running and c.suggestion is not None)
        self.retrain_button.setEnabled(checkpoint is not None)
