"""Prediction in a background thread into a "prediction" Labels layer; accept corrected slices.

The prediction layer shares the image's geometry and the annotation class table; after
the user corrects a slice of it, :meth:`PredictController.accept` copies that slice into
the annotation layer, where it counts as ground truth for retraining. No Qt here: the
result comes back through the training controller's ``deliver`` (see :mod:`.tasks`).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import Colormap
from psygnal import Signal

from napari_numsnet import pipeline
from napari_numsnet.config import PredictConfig
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.engine.predict import Prediction
from napari_numsnet.engine.suggest import Suggestion, suggest_from_probabilities
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable

from . import layers as L
from .errors import report
from .tasks import run_in_thread
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


class PredictController:
    """Predicts the current image with the last checkpoint; accepts corrected slices."""

    running_changed = Signal(bool)
    predicted = Signal(object)
    """The prediction Labels layer was filled."""

    def __init__(self, training: TrainController) -> None:
        self.training = training
        self.annotation = training.annotation
        self.settings = PredictSettings()
        self.run_settings: PredictSettings | None = None
        self.worker: threading.Thread | None = None
        self.running = False
        self.suggestion: Suggestion | None = None
        """Slices to correct next, from the last whole-stack prediction (a single model)."""
        self._predicted: dict[int, np.ndarray] = {}  # layer id -> what was predicted there

    @property
    def busy(self) -> bool:
        return self.worker is not None and self.worker.is_alive()

    def start(self) -> threading.Thread:
        """Predict in a worker thread; returns the started thread."""
        if self.running:
            raise NumsnetError("A prediction is already running.", "Wait for it to finish.")
        checkpoint = self.training.checkpoint
        if checkpoint is None:
            raise NumsnetError("There is no trained model.", "Train first, or load a checkpoint.")
        image = self.annotation.image
        if image is None:
            raise NumsnetError("No image is chosen.", "Choose the image in the Annotate tab.")
        s = copy.deepcopy(self.settings)  # this run's settings
        stack = L.stack_of(image)
        classes = ClassTable.from_names(checkpoint.class_names)
        table = self.annotation.classes
        if table.names == classes.names:
            classes = table
        self.run_settings = s
        self._set_running(True)

        annotated = sorted(self.annotation.annotated)
        ranked: list[Suggestion | None] = [None]

        def job() -> Prediction:
            # A whole stack with one model: its probabilities also rank the slices.
            scored = isinstance(checkpoint, Checkpoint) and s.slice_range is None
            wanted = s.probabilities or scored
            result = pipeline.predict(checkpoint, stack, s.config, s.slice_range, wanted)
            if scored and result.probabilities is not None:
                exclusive = checkpoint.model_config.exclusive
                ranked[0] = suggest_from_probabilities(result.probabilities, annotated, exclusive)
                if not s.probabilities:
                    result.probabilities = None
            return result

        self.worker = run_in_thread(
            job,
            lambda result: self._finish(
                lambda: self._on_returned(result, image, classes, s, ranked[0])
            ),
            lambda exc: self._finish(lambda: self._on_error(exc)),
            self.training.deliver,
        )
        return self.worker

    def _finish(self, then: Callable[[], None]) -> None:
        try:
            then()
        finally:
            self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.running = running
        self.running_changed.emit(running)

    def _on_error(self, exc: BaseException) -> None:
        report(exc)

    def _on_returned(
        self,
        result: Prediction,
        image: Image,
        classes: ClassTable,
        settings: PredictSettings,
        suggestion: Suggestion | None = None,
    ) -> None:
        if suggestion is not None or settings.slice_range is None:
            self.suggestion = suggestion
        start, stop = settings.slice_range or (0, len(result.labels))
        layer = self.prediction_layer(image)
        last = None if layer is None else self._predicted.get(id(layer))
        if layer is not None and last is not None and self._unaccepted(layer, last):
            # Corrections not accepted yet: keep that layer as it is, predict into a new one.
            L.info(layer)["role"] = "corrections"
            layer.name = f"{image.name} prediction (corrections not accepted)"
            layer = None
        if layer is None:
            classes = L.screen_classes(self.annotation.viewer, classes)
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
        self._predicted[id(layer)] = np.array(layer.data, copy=True)
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

    def _unaccepted(self, layer: Labels, last: np.ndarray) -> bool:
        """Whether ``layer`` holds edits since the last prediction that were not accepted
        (a slice accepted into the annotations, as it is, does not count)."""
        data = np.asarray(layer.data)
        changed = np.flatnonzero((data != last).reshape(len(data), -1).any(axis=1))
        labels = self.annotation.labels
        for z in changed.tolist():
            accepted = (
                labels is not None
                and z in self.annotation.annotated
                and np.array_equal(np.asarray(labels.data[z]), data[z])
            )
            if not accepted:
                return True
        return False

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

    def next_suggested(self) -> int:
        """Go to the highest-ranked slice not annotated yet; returns it."""
        if self.suggestion is None:
            raise NumsnetError(
                "There is no suggestion yet.", "Predict the whole stack with a single model."
            )
        done = self.annotation.annotated
        for z in self.suggestion.top():
            if z not in done:
                self.annotation.go_to(z)
                return z
        raise NumsnetError("Every suggested slice is annotated.", "Predict again, or retrain.")

    def accept(self, z: int | None = None, source: Labels | None = None) -> int:
        """Copy slice ``z`` (default: the current one) of the prediction into the annotations."""
        source = source or self.prediction_layer()
        if source is None:
            raise NumsnetError("There is no prediction to accept.", "Predict first.")
        return self.annotation.accept_slice(np.asarray(source.data), z)
