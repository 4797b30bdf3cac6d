"""Train tab, "Data" box: more image/annotation pairs to train on, and a checkpoint to
start from with another class set (transfer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
)

from napari_numsnet.engine.checkpoint import load_checkpoint

from .errors import reported
from .qt_helpers import LayerCombo
from .training import TrainController


class StacksBox(QGroupBox):
    """Extra training pairs (image + its Labels layer) and the transfer checkpoint."""

    def __init__(self, controller: TrainController, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        viewer = controller.annotation.viewer
        self.image = LayerCombo(viewer, Image)
        self.labels = LayerCombo(viewer, Labels)
        self.pairs = QListWidget()
        self.pairs.setMaximumHeight(48)
        self.pairs.setToolTip("Trained on together with the annotated image of this panel.")
        add = QPushButton("Add pair")
        add.setToolTip("Train on this image with these labels too (both phases, more stacks).")
        add.clicked.connect(lambda *_: self.add_pair())
        remove = QPushButton("Remove")
        remove.clicked.connect(lambda *_: self._remove())
        self.transfer_label = QLabel("from scratch")
        self.transfer_label.setWordWrap(True)
        pick = QPushButton("Start from checkpoint…")
        pick.setToolTip(
            "Reuse every layer but the head of a checkpoint trained on another class set "
            "(transfer learning, as numsnet train --transfer)."
        )
        pick.clicked.connect(lambda *_: self.set_transfer())
        clear = QPushButton("Scratch")
        clear.setToolTip("Start from random weights again.")
        clear.clicked.connect(lambda *_: self.set_transfer(""))
        pair_row, transfer_row = QHBoxLayout(), QHBoxLayout()
        for widget in (self.image, self.labels, add):
            pair_row.addWidget(widget)
        for widget in (pick, clear):
            transfer_row.addWidget(widget)
        form = QFormLayout()
        form.addRow("Also train on", pair_row)
        form.addRow("", self.pairs)
        form.addRow("", remove)
        form.addRow("Start", self.transfer_label)
        form.addRow("", transfer_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        controller.pairs_changed.connect(self.refresh)
        self.refresh()

    @reported
    def add_pair(self, image: Image | None = None, labels: Labels | None = None) -> None:
        image = image or self.image.current_layer()
        labels = labels or self.labels.current_layer()
        if image is None or labels is None:
            return
        self.controller.add_pair(image, labels)

    def _remove(self) -> None:
        row = self.pairs.currentRow()
        if row >= 0:
            self.controller.remove_pair(row)

    @reported
    def set_transfer(self, path: str | None = None) -> None:
        """Use the checkpoint at ``path`` to start from (``""``: from scratch)."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Checkpoint", "", "*.numsnet.pt *.pt")
            if not path:
                return
        settings = self.controller.settings
        if not path:
            settings.transfer_from = None
            self.transfer_label.setText("from scratch")
            return
        checkpoint = load_checkpoint(path)  # refuse a damaged file now, not at Train
        settings.transfer_from = str(path)
        classes = ", ".join(checkpoint.class_names[1:])
        self.transfer_label.setText(f"layers of {Path(path).name} ({classes}), a new head")
        self.transfer_label.setToolTip(str(path))

    def refresh(self, *args: Any) -> None:
        self.pairs.clear()
        for image, labels in self.controller.pairs:
            self.pairs.addItem(f"{image.name} + {labels.name}")
