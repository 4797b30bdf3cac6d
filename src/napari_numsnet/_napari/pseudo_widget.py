"""Pseudo-labels tab: k-means on the current stack (K, HU window), accept slices, self-learning."""

from __future__ import annotations

from typing import Any

from napari.layers import Labels
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_numsnet.data.hounsfield import looks_like_hounsfield
from napari_numsnet.errors import NumsnetError
from napari_numsnet.pseudolabel import KMeansConfig

from .errors import reported
from .pseudo import PseudoController
from .qt_helpers import LayerCombo


def _hu(value: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox(decimals=0, minimum=-3000.0, maximum=3000.0, suffix=" HU")
    box.setValue(value)
    return box


class PseudoWidget(QWidget):
    """Lays out the pseudo-label controls; every action is one call into the controller."""

    def __init__(
        self, controller: PseudoController, self_learning: QWidget | None = None, parent=None
    ) -> None:
        super().__init__(parent)
        self.controller = controller
        defaults = KMeansConfig()
        self.k = QSpinBox(minimum=2, maximum=12)
        self.k.setValue(defaults.k)
        self.low, self.high = _hu(defaults.window[0]), _hu(defaults.window[1])
        self.air = _hu(defaults.air_threshold)
        self.run_button = QPushButton("Run k-means")
        self.source = LayerCombo(controller.annotation.viewer, Labels)
        self.notes = QLabel("The lungs are found, then their intensities are clustered.")
        self.notes.setWordWrap(True)
        window = QHBoxLayout()
        for widget in (self.low, QLabel("to"), self.high):
            window.addWidget(widget)
        form = QFormLayout()
        form.addRow("Clusters (K)", self.k)
        self.window_label, self.air_label = QLabel("HU window"), QLabel("Air below")
        form.addRow(self.window_label, window)
        form.addRow(self.air_label, self.air)
        accept = QPushButton("Accept this slice into the annotations")
        new_layer = QPushButton("New annotation layer with the pseudo-label classes")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.notes)
        layout.addWidget(QLabel("Accept from layer:"))
        layout.addWidget(self.source)
        layout.addWidget(accept)
        layout.addWidget(new_layer)
        if self_learning is not None:
            layout.addWidget(self_learning)
        layout.addStretch(1)
        self.run_button.clicked.connect(lambda *_: self._run())
        accept.clicked.connect(lambda *_: self._accept())
        new_layer.clicked.connect(lambda *_: reported(controller.annotate_with_pseudo_classes)())
        controller.running_changed.connect(self._on_running)
        controller.finished.connect(self._on_finished)
        controller.annotation.changed.connect(self._on_image)
        self._image: Any = None
        self._on_image()

    def _on_image(self) -> None:
        """HU fields for CT; for other data say plainly that its percentiles are used."""
        image = self.controller.annotation.image
        if image is self._image:
            return
        self._image = image
        hounsfield = image is None or looks_like_hounsfield(image.data)
        for box in (self.low, self.high, self.air):
            box.setEnabled(hounsfield)
            box.setSuffix(" HU" if hounsfield else "")
        self.window_label.setText("HU window" if hounsfield else "Window")
        if hounsfield:
            self.notes.setText("The lungs are found, then their intensities are clustered.")
        else:
            self.notes.setText(
                "Not a CT in HU: the window is the image's 1st-99th percentiles, "
                "the air level Otsu's threshold."
            )

    def write_settings(self) -> None:
        """Copy the fields into the controller's k-means settings (validated by the core)."""
        self.controller.config = KMeansConfig(
            window=(self.low.value(), self.high.value()),
            air_threshold=self.air.value(),
            k=self.k.value(),
        )

    @reported
    def _run(self) -> None:
        self.write_settings()
        self.controller.start()

    @reported
    def _accept(self) -> None:
        layer = self.source.current_layer()
        if layer is None:
            raise NumsnetError("No Labels layer to accept from.", "Run k-means first.")
        z = self.controller.annotation.accept_slice(layer.data)
        self.notes.setText(f"Slice {z} of {layer.name!r} is now ground truth in the annotations.")

    def _on_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.run_button.setText("Clustering…" if running else "Run k-means")

    def _on_finished(self, result: Any) -> None:
        low, high = result.window
        unit = " HU" if result.hounsfield else " (image units)"
        self.notes.setText(
            f"Window {low:.4g} to {high:.4g}{unit}, air below {result.threshold:.4g}."
            + (f" {len(result.notes)} note(s): hover for them." if result.notes else "")
        )
        self.notes.setToolTip("\n".join(result.notes))
        name = f"{self.controller.annotation.image.name} pseudo-labels"
        if name in self.controller.annotation.viewer.layers:
            self.source.set_layer(self.controller.annotation.viewer.layers[name])
