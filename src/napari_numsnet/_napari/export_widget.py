"""Export tab: a Labels layer to NIfTI (source geometry, class table beside it), the checkpoint."""

from __future__ import annotations

from napari.layers import Labels
from qtpy.QtWidgets import QFileDialog, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_numsnet.errors import NumsnetError

from .errors import reported
from .export import export_checkpoint, export_layer
from .qt_helpers import LayerCombo
from .training import TrainController


class ExportWidget(QWidget):
    """Lays out the export buttons; each calls one export function."""

    def __init__(self, training: TrainController, parent=None) -> None:
        super().__init__(parent)
        self.training = training
        self.layer = LayerCombo(training.annotation.viewer, Labels)
        labels_button = QPushButton("Save labels as NIfTI…")
        labels_button.setToolTip("In the image's geometry, with <name>.classes.json beside it.")
        checkpoint_button = QPushButton("Save trained model…")
        checkpoint_button.setToolTip("For the command line: numsnet predict --checkpoint FILE")
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Labels layer:"))
        layout.addWidget(self.layer)
        layout.addWidget(labels_button)
        layout.addWidget(checkpoint_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        labels_button.clicked.connect(lambda *_: self.save_labels())
        checkpoint_button.clicked.connect(lambda *_: self.save_checkpoint())

    @reported
    def save_labels(self, path: str | None = None) -> list[str] | None:
        layer = self.layer.current_layer()
        if layer is None:
            raise NumsnetError("There is no Labels layer to save.", "Annotate or predict first.")
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Save labels", f"{layer.name}.nii.gz", "NIfTI (*.nii.gz *.nii)"
            )
        if not path:
            return None
        written = export_layer(layer, path)
        self.status.setText("Saved " + " and ".join(written))
        return written

    @reported
    def save_checkpoint(self, path: str | None = None) -> str | None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Save trained model", "model.numsnet.pt", "Checkpoint (*.numsnet.pt)"
            )
        if not path:
            return None
        written = export_checkpoint(self.training.checkpoint, path)
        self.status.setText(f"Saved {written}; use it with numsnet predict --checkpoint {written}")
        return str(written)
