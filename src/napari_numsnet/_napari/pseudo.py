"""k-means pseudo-labels (DRSegUNet thesis 4.4) of the current stack, in a worker thread.

The result goes to its own Labels layer, ``<image> pseudo-labels``, with a class table
``background`` and one name per class (k = 3: lung, ground-glass, consolidation, as the
core's self-learning loop names them); slices of it can be accepted into the annotations
like prediction slices.
"""

from __future__ import annotations

from typing import Any

from napari.layers import Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_info
from qtpy.QtCore import QObject, Signal

from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.pseudolabel import KMeansConfig, PseudoLabelResult, kmeans_pseudolabels

from . import layers as L
from .annotation import AnnotationController
from .errors import report

try:  # the names the self-learning loop gives the k-means classes, where it exists
    from napari_numsnet.workflows.selflearn import class_names
except ImportError:  # pragma: no cover - depends on the installed core

    def class_names(k: int) -> list[str]:
        return ["background", *(f"cluster {i}" for i in range(1, k + 1))]


def pseudo_classes(k: int) -> ClassTable:
    """``background`` and one name per k-means class (lung, ground-glass, consolidation)."""
    return ClassTable.from_names(class_names(k))


class PseudoController(QObject):
    """Runs the k-means pipeline and keeps its result."""

    running_changed = Signal(bool)
    finished = Signal(object)
    """The :class:`PseudoLabelResult` of the last run."""

    def __init__(self, annotation: AnnotationController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.annotation = annotation
        self.config = KMeansConfig()
        self.result: PseudoLabelResult | None = None
        self.worker: Any = None
        self.running = False

    def start(self) -> Any:
        """Run k-means on the current image in a worker thread; returns the started worker."""
        if self.running:
            raise NumsnetError("The pseudo-labels are being computed.", "Wait for them.")
        image = self.annotation.image
        if image is None:
            raise NumsnetError("No image is chosen.", "Choose the image in the Annotate tab.")
        worker = create_worker(
            kmeans_pseudolabels,
            L.stack_of(image),
            self.config,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(lambda result: self._on_returned(result, image))
        worker.errored.connect(report)
        worker.finished.connect(lambda: self._set_running(False))
        self.worker = worker
        self._set_running(True)
        worker.start()
        return worker

    def _set_running(self, running: bool) -> None:
        self.running = running
        self.running_changed.emit(running)

    def _on_returned(self, result: PseudoLabelResult, image: Any) -> None:
        self.result = result
        classes = pseudo_classes(len(result.centers))
        self.show_labels(result.labels, image, f"{image.name} pseudo-labels", classes)
        if result.notes:  # the first sentence; the tab's tooltip holds every note
            show_info(result.notes[0].split(". ")[0].rstrip(".") + ".")
        self.finished.emit(result)

    def show_labels(self, labels: Any, image: Any, name: str, classes: ClassTable) -> Labels:
        """Put ``labels`` into the Labels layer ``name`` (created on the image's grid)."""
        viewer = self.annotation.viewer
        if name in viewer.layers:
            layer = viewer.layers[name]
            layer.data = labels
            kept = L.classes_of(layer)
            classes = kept if kept is not None and kept.names == classes.names else classes
        else:
            classes = L.screen_classes(viewer, classes)  # not the annotations' colours
            meta = L.numsnet_metadata(L.volume_meta(image), L.source_path(image), classes)
            meta[L.KEY]["role"] = "pseudo-labels"
            layer = viewer.add_labels(labels, name=name, scale=image.scale, metadata=meta)
        L.apply_classes(layer, classes)
        return layer

    def annotate_with_pseudo_classes(self) -> Labels:
        """A new, empty annotation layer with the pseudo-label classes."""
        k = len(self.result.centers) if self.result is not None else self.config.k
        return self.annotation.new_labels_layer(pseudo_classes(k))
