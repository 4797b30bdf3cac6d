"""Annotate tab: class list, slice planner, slice strip, mark slices done, autosave status."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_numsnet.config import SamplingConfig

from .annotation import AnnotationController
from .class_list import ClassList
from .errors import reported
from .qt_helpers import SliceStrip, highlight, strip_legend
from .shortcuts import with_shortcut

STRATEGIES = {
    "Spread": "spread",
    "Mid,Rand": "mid_rand",
    "Mid,Seq": "mid_seq",
    "Initial,Seq": "initial_seq",
}
NEW_LAYER, DONE = "New annotation layer", "Done ✓ and next"


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
        self.class_list = ClassList(controller)
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
        self._shown_sampling: SamplingConfig | None = None
        self._shown_workspace: Any = None
        self._build()
        controller.changed.connect(self.refresh)
        controller.viewer.dims.events.current_step.connect(self._on_step)
        self.refresh()

    def _build(self) -> None:
        form = QFormLayout()
        plan = QHBoxLayout()
        plan.addWidget(self.strategy)
        plan.addWidget(self.fraction)
        form.addRow("Planner", plan)
        form.addRow("Seed", self.seed)
        grid = QGridLayout()
        c = self.controller
        buttons = [
            (NEW_LAYER, "Empty Labels layer with these classes.", self._new_layer),
            ("Plan slices", "Propose the slices to annotate.", self._plan),
            (
                "Next planned ▶",
                with_shortcut("Go to the next planned slice not yet done.", "next"),
                c.next_slice,
            ),
            (
                DONE,
                with_shortcut("This slice counts as annotated (empty too).", "done"),
                self._done,
            ),
            ("Not done", "This slice no longer counts as annotated.", lambda: c.mark(done=False)),
            ("Mark painted done", "Every painted slice counts as annotated.", c.mark_painted),
        ]
        self.buttons = {}
        for i, (text, tip, slot) in enumerate(buttons):
            self.buttons[text] = _button(text, tip, reported(slot))
            grid.addWidget(self.buttons[text], i // 2, i % 2)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Classes (click one to paint it):"))
        layout.addWidget(self.class_list)
        layout.addLayout(form)
        layout.addLayout(grid)
        layout.addWidget(QLabel("Slices along the stack (click to go there):"))
        layout.addWidget(self.strip)
        layout.addWidget(strip_legend())
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
        self.controller.new_labels_layer()
        self.class_list.select(1)

    def _load_classes(self, path: str | None = None) -> None:
        self.class_list.load(path)

    # --- display ---------------------------------------------------------------------

    def _on_step(self, event: Any = None) -> None:
        if self.controller.image is not None:
            self.strip.current = self.controller.current_slice()
            self.strip.update()

    def show_saved(self, folder: Any, when: float | None = None, restored: bool = False) -> None:
        """Say when the annotations were saved (``when``: seconds since the epoch, default
        now); the tooltip holds the whole work folder."""
        stamp = time.localtime(time.time() if when is None else when)
        today = time.strftime("%Y-%m-%d") == time.strftime("%Y-%m-%d", stamp)
        at = time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M", stamp)
        verb = "Restored work saved" if restored else "Autosaved"
        self.saved_label.setText(f"{verb} {at} in {Path(folder).name}")
        self.saved_label.setToolTip(f"Work folder: {folder}")
        self.saved_label.setStyleSheet("")
        self.class_list.refresh()  # voxel counts after the edits

    def show_save_failed(self, message: str) -> None:
        """Say plainly that the last edits are not saved, and why (the tooltip has it all)."""
        first = message.splitlines()[0] if message else "unknown error"
        self.saved_label.setText(f"NOT saved: {first}")
        self.saved_label.setToolTip(message)
        self.saved_label.setStyleSheet("color: #e5533d;")

    def _show_restored(self) -> None:
        workspace = self.controller.workspace
        mtime = None
        if workspace is not None and workspace.has_annotations():
            with contextlib.suppress(OSError):
                mtime = workspace.state_path.stat().st_mtime
        if mtime is not None:
            self.show_saved(workspace.folder, mtime, restored=True)
        else:
            self.saved_label.setText("Not saved yet.")
            self.saved_label.setToolTip(
                "" if workspace is None else f"Work folder: {workspace.folder}"
            )

    def refresh(self) -> None:
        c = self.controller
        if c.workspace is not self._shown_workspace:
            self._shown_workspace = c.workspace
            self._show_restored()
        if c.sampling != self._shown_sampling:  # restored or planned: show its settings
            inverse = {v: k for k, v in STRATEGIES.items()}
            self.strategy.setCurrentText(inverse.get(c.sampling.strategy, "Spread"))
            self.fraction.setValue(c.sampling.fraction * 100.0)
            self.seed.setValue(c.sampling.seed)
            self._shown_sampling = c.sampling
        has_labels = c.labels is not None
        for text in (DONE, "Not done", "Mark painted done"):
            self.buttons[text].setEnabled(has_labels)
        if c.image is None:
            self.strip.set_state(0)
            self.status.setText("Choose the image to annotate.")
            self._highlight(None)
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
        finished = len(planned & set(done))
        text = (
            f"Train on {train}, validate on {val}. "
            f"Done {finished} of {len(planned)} planned, {len(done)} in all."
        )
        if not has_labels:
            text = "Step 1: create an annotation layer. " + text
        self.status.setText(text)
        self._highlight(NEW_LAYER if not has_labels else DONE if finished < len(planned) else None)

    def _highlight(self, step: str | None) -> None:
        """Mark the button of the next step (``None``: no button)."""
        for text, button in self.buttons.items():
            highlight(button, text == step)
