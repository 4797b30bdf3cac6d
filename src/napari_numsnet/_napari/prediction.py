"""Prediction in a napari thread worker into a "prediction" Labels layer; accept corrected slices.

The prediction layer shares the image's geometry and the annotation class table; after
the user corrects a slice of it, :meth:`PredictController.accept` copies that slice into
the annotation layer, where it counts as ground truth for retraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.colormaps import Colormap
from qtpy.QtCore import QObject, Signal

from napari_numsnet import pipeline
from napari_numsnet.config import PredictConfig
from napari_numsnet.engine.predict import Prediction
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable

from . import layers as L
from .errors import report
from .training import TrainController


@dataclass
class PredictSettings:
    """What the Predict panel writes and the worker reads.

    Attributes
    ----------
    config
        Direction along the stack, chunk size, device.
    slice_range
        ``(start, stop)`` slices to predict, or ``None`` for the whole stack.
    probabilities
        Also add one probability Image layer per class.
    """

    config: PredictConfig = field(default_factory=PredictConfig)
    slice_range: tuple[int, int] | None = None
    probabilities: bool = False


def probability_colormap(color: str, name: str) -> Colormap:
    """Transparent black to the class colour."""
    rgb = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    return Colormap([[0, 0, 0, 0], [*rgb, 1]], name=name)


class PredictController(QObject):
    """Predicts the current image with the last checkpoint; accepts corrected slices."""

    running_changed = Signal(bool)
    predicted = Signal(object)
    """The prediction Labels layer was filled."""

    def __init__(self, training: TrainController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.training = training
        self.annotation = training.annotation
        self.settings = PredictSettings()
        self.worker: Any = None
        self.running = False

    def start(self) -> Any:
        """Predict in a worker thread; returns the started worker."""
        if self.running:
            raise NumsnetError("A prediction is already running.", "Wait for it to finish.")
        checkpoint = self.training.checkpoint
        if checkpoint is None:
            raise NumsnetError("There is no trained model.", "Train first, or load a checkpoint.")
        image = self.annotation.image
        if image is None:
            raise NumsnetError("No image is chosen.", "Choose the image in the Annotate tab.")
        s = self.settings
        worker = create_worker(
            pipeline.predict,
            checkpoint,
            L.stack_of(image),
            s.config,
            s.slice_range,
            s.probabilities,
            _start_thread=False,
            _ignore_errors=True,
        )
        classes = ClassTable.from_names(checkpoint.class_names)
        table = self.annotation.classes
        if table.names == classes.names:
            classes = table
        worker.returned.connect(lambda result: self._on_returned(result, image, classes))
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda: self._set_running(False))
        self.worker = worker
        self._set_running(True)
        worker.start()
        return worker

    def _set_running(self, running: bool) -> None:
        self.running = running
        self.running_changed.emit(running)

    def _on_error(self, exc: BaseException) -> None:
        report(exc)

    def _on_returned(self, result: Prediction, image: Image, classes: ClassTable) -> None:
        start, stop = self.settings.slice_range or (0, len(result.labels))
        layer = self.prediction_layer(image)
        if layer is None:
            meta = L.numsnet_metadata(L.volume_meta(image), L.source_path(image), classes)
            meta[L.KEY]["role"] = "prediction"
            meta[L.KEY]["image"] = image.name
            layer = self.annotation.viewer.add_labels(
                result.labels, name=f"{image.name} prediction", scale=image.scale, metadata=meta
            )
        else:
            data = np.array(layer.data, copy=True)
            data[start:stop] = result.labels[start:stop]
            layer.data = data
        L.apply_classes(layer, classes)
        if result.probabilities is not None:
            self._show_probabilities(result.probabilities, image, classes)
        self.predicted.emit(layer)

    def _show_probabilities(self, prob: np.ndarray, image: Image, classes: ClassTable) -> None:
        viewer = self.annotation.viewer
        for value in range(1, len(prob)):
            name = f"{image.name} p({classes.names[value]})"
            if name in viewer.layers:
                viewer.layers[name].data = prob[value]
                continue
            viewer.add_image(
                prob[value],
                name=name,
                scale=image.scale,
                colormap=probability_colormap(classes.colors[value], name),
                contrast_limits=(0.0, 1.0),
                blending="additive",
                visible=False,
            )

    def prediction_layer(self, image: Image | None = None) -> Labels | None:
        """The prediction layer of ``image`` (default: the annotated image), if any."""
        image = image or self.annotation.image
        if image is None:
            return None
        for layer in self.annotation.viewer.layers:
            meta = L.info(layer) if isinstance(layer, Labels) else {}
            if meta.get("role") == "prediction" and meta.get("image") == image.name:
                return layer
        return None

    def accept(self, z: int | None = None, source: Labels | None = None) -> int:
        """Copy slice ``z`` (default: the current one) of the prediction into the annotations."""
        source = source or self.prediction_layer()
        if source is None:
            raise NumsnetError("There is no prediction to accept.", "Predict first.")
        return self.annotation.accept_slice(np.asarray(source.data), z)
