"""Annotate tab: class table, slice planner, slice strip, mark slices done, autosave status."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_numsnet.config import SamplingConfig
from napari_numsnet.io.classes import ClassTable, load_class_table

from .annotation import AnnotationController
from .errors import reported
from .qt_helpers import SliceStrip

STRATEGIES = {"Mid,Rand": "mid_rand", "Mid,Seq": "mid_seq", "Initial,Seq": "initial_seq"}


def _button(text: str, tip: str, slot: Any) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip)
    button.clicked.connect(lambda *_: slot())
    return button


class AnnotateWidget(QWidget):
    """Lays out the annotation controls; every action is one call into the controller."""

    def __init__(self, controller: AnnotationController, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.class_edit = QLineEdit()
        self.class_edit.setToolTip("Class names after the background, separated by commas.")
        self.class_edit.editingFinished.connect(lambda: self._apply_classes())
        self.strategy = QComboBox()
        self.strategy.addItems(list(STRATEGIES))
        self.fraction = QDoubleSpinBox(suffix=" %", decimals=1, minimum=1.0, maximum=100.0)
        self.fraction.setValue(10.0)
        self.seed = QSpinBox(maximum=999_999)
        self.strip = SliceStrip()
        self.strip.clicked.connect(lambda z: reported(controller.go_to)(z))
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.saved_label = QLabel("Not saved yet.")
        self.saved_label.setWordWrap(True)
        self._shown_sampling: SamplingConfig | None = None
        self._build()
        controller.changed.connect(self.refresh)
        controller.viewer.dims.events.current_step.connect(self._on_step)
        self.refresh()

    def _build(self) -> None:
        classes = QHBoxLayout()
        classes.addWidget(self.class_edit)
        classes.addWidget(_button("Load…", "Load a class table (JSON).", self._load_classes))
        form = QFormLayout()
        form.addRow("Classes", classes)
        plan = QHBoxLayout()
        plan.addWidget(self.strategy)
        plan.addWidget(self.fraction)
        form.addRow("Planner", plan)
        form.addRow("Seed", self.seed)
        grid = QGridLayout()
        c = self.controller
        buttons = [
            ("New annotation layer", "Empty Labels layer with these classes.", self._new_layer),
            ("Plan slices", "Propose the slices to annotate.", self._plan),
            ("Next planned ▶", "Go to the next planned slice not yet done.", c.next_slice),
            ("Done ✓ and next", "This slice counts as annotated (empty too).", self._done),
            ("Not done", "This slice no longer counts as annotated.", lambda: c.mark(done=False)),
            ("Mark painted done", "Every painted slice counts as annotated.", c.mark_painted),
        ]
        self.buttons = {}
        for i, (text, tip, slot) in enumerate(buttons):
            self.buttons[text] = _button(text, tip, reported(slot))
            grid.addWidget(self.buttons[text], i // 2, i % 2)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(grid)
        layout.addWidget(QLabel("Slices along the stack (click to go there):"))
        layout.addWidget(self.strip)
        layout.addWidget(self.status)
        layout.addWidget(self.saved_label)
        layout.addStretch(1)

    # --- actions ---------------------------------------------------------------------

    def sampling(self) -> SamplingConfig:
        return self.controller.sampling.replace(
            strategy=STRATEGIES[self.strategy.currentText()],
            fraction=self.fraction.value() / 100.0,
            seed=self.seed.value(),
        )

    def _plan(self) -> None:
        self.controller.plan(self.sampling())
        self.controller.edited.emit()

    def _done(self) -> None:
        self.controller.mark()
        self.controller.next_slice()

    def _new_layer(self) -> None:
        self._apply_classes()
        self.controller.new_labels_layer()

    @reported
    def _apply_classes(self) -> None:
        names = [n.strip() for n in self.class_edit.text().split(",") if n.strip()]
        current = self.controller.classes
        if not names or tuple(names) == current.names[1:]:
            return
        table = ClassTable.from_names(["background", *names])
        kept = current.colors[: table.num_values]  # existing classes keep their colours
        self.controller.set_classes(ClassTable(table.names, kept + table.colors[len(kept) :]))

    @reported
    def _load_classes(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Class table", "", "JSON (*.json)")
        if path:
            self.controller.set_classes(load_class_table(path))

    # --- display ---------------------------------------------------------------------

    def _on_step(self, event: Any = None) -> None:
        if self.controller.image is not None:
            self.strip.current = self.controller.current_slice()
            self.strip.update()

    def show_saved(self, folder: Any) -> None:
        self.saved_label.setText(f"Autosaved {time.strftime('%H:%M:%S')} to {Path(folder).name}")
        self.saved_label.setToolTip(str(folder))

    def refresh(self) -> None:
        c = self.controller
        self.class_edit.setText(", ".join(c.classes.names[1:]))
        if c.sampling != self._shown_sampling:  # restored or planned: show its settings
            inverse = {v: k for k, v in STRATEGIES.items()}
            self.strategy.setCurrentText(inverse.get(c.sampling.strategy, "Mid,Rand"))
            self.fraction.setValue(c.sampling.fraction * 100.0)
            self.seed.setValue(c.sampling.seed)
            self._shown_sampling = c.sampling
        has_labels = c.labels is not None
        for text in ("Done ✓ and next", "Not done", "Mark painted done"):
            self.buttons[text].setEnabled(has_labels)
        if c.image is None:
            self.strip.set_state(0)
            self.status.setText("Choose the image to annotate.")
            return
        split = c.split
        train = split.train.tolist() if split is not None else []
        val = split.val.tolist() if split is not None else []
        planned = set(train) | set(val)
        done = sorted(c.annotated)
        self.strip.set_state(
            c.image.data.shape[0],
            train,
            val,
            done,
            c.painted_slices().tolist(),
            c.current_slice(),
        )
        text = (
            f"Planned {len(train)} training slice(s) {train} and {len(val)} validation "
            f"slice(s) {val}. Done: {len(planned & set(done))} of {len(planned)} planned; "
            f"{len(done)} slice(s) annotated in all."
        )
        if not has_labels:
            text += " Create an annotation layer (or choose a Labels layer) to start."
        self.status.setText(text)
