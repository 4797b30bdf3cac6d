"""The annotation state of one image: layers, work folder, planned and annotated slices.

No Qt here: the widgets call these methods and listen to the two signals; the
debounced autosave (a Qt timer) listens to ``edited``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from psygnal import Signal

from napari_numsnet.config import SamplingConfig
from napari_numsnet.data.slices import SliceSplit
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.workflows.sample import load_sample, sample_dir
from napari_numsnet.workflows.stacks import AnnotatedStack, plan_slices
from napari_numsnet.workspace import Workspace

from . import layers as L

MIN_TRAINING_SLICES = 3
"""The planner proposes at least this many training slices (fewer on stacks of 3 or less),
whatever the fraction: 10% of a 6-17 slice MRI stack would be one slice."""


def default_classes(image: Image | None) -> ClassTable:
    """The sample's classes for the sample CT, else background and one class."""
    path = L.source_path(image) if image is not None else None
    if path and Path(path).resolve().parent == sample_dir().resolve():
        return load_sample().classes.distinct_from()
    return ClassTable.from_names(["background", "class 1"])


def planner_sampling(n_slices: int, sampling: SamplingConfig) -> SamplingConfig:
    """``sampling`` with the fraction raised so that a short stack still gets
    :data:`MIN_TRAINING_SLICES` training slices (and one left for validation)."""
    wanted = min(MIN_TRAINING_SLICES, n_slices - 1)
    if n_slices < 2 or round(sampling.fraction * n_slices) >= wanted:
        return sampling
    return sampling.replace(fraction=min(1.0, (wanted + 0.25) / n_slices))


class AnnotationController:
    """Which image is annotated, in which Labels layer, and which slices count.

    Parameters
    ----------
    viewer
        The napari viewer (for the current slice and the layer list).
    """

    changed = Signal()
    """The image, layer, plan or annotated slices changed (refresh the widgets)."""
    edited = Signal()
    """The annotations changed and should be saved (debounced by the caller)."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.image: Image | None = None
        self.labels: Labels | None = None
        self.workspace: Workspace | None = None
        self.classes = default_classes(None)
        self.sampling = SamplingConfig()
        self.split: SliceSplit | None = None
        self.annotated: set[int] = set()

    # --- choosing layers ----------------------------------------------------------

    def set_image(self, layer: Image | None) -> None:
        """Annotate ``layer``: find or restore its annotations and plan its slices."""
        if layer is self.image:
            return
        stack = None if layer is None else L.stack_of(layer)
        self.set_labels(None)
        self.image, self.workspace, self.split = layer, None, None
        if layer is None:
            self.changed.emit()
            return
        self.workspace = L.workspace_for(layer)
        self.classes = default_classes(layer)
        linked = self._linked_labels()
        if linked is None:
            saved = self.workspace.load_annotations(stack.shape)
            if saved is not None:
                self.sampling = saved.sampling
                linked = self._add_labels(saved.labels, saved.classes or self.classes)
                L.info(linked)["annotated"] = list(saved.annotated)
        self.plan(self.sampling)
        self.set_labels(linked)

    def _linked_labels(self) -> Labels | None:
        folder = str(self.workspace.folder)
        for layer in self.viewer.layers:
            meta = L.info(layer) if isinstance(layer, Labels) else {}
            if meta.get("role") == "annotations" and meta.get("work_folder") == folder:
                return layer
        return None

    def set_labels(self, layer: Labels | None) -> None:
        """Use ``layer`` for the annotations (its class table and annotated slices)."""
        if self.labels is not None:
            self.labels.events.paint.disconnect(self._on_edit)
            self.labels.events.data.disconnect(self._on_edit)
        self.labels = layer
        self.annotated = set()
        if layer is not None:
            self._check_shape(layer)
            meta = L.info(layer)
            self.annotated = {int(i) for i in meta.get("annotated", [])}
            table = L.classes_of(layer)
            if table is None:  # a layer made elsewhere: give it a table (names on hover)
                top = int(np.max(layer.data)) if np.size(layer.data) else 0
                table = self.classes if top < self.classes.num_values else None
                table = table or L.screen_classes(self.viewer, ClassTable.default(top + 1))
                L.apply_classes(layer, table)
            self.classes = table
            if self.workspace is not None:
                meta.update(role="annotations", work_folder=str(self.workspace.folder))
            layer.events.paint.connect(self._on_edit)
            layer.events.data.connect(self._on_edit)
        self.changed.emit()

    def _check_shape(self, layer: Labels) -> None:
        if self.image is not None and layer.data.shape != self.image.data.shape:
            raise NumsnetError(
                f"Labels {layer.name!r} {layer.data.shape} and image {self.image.name!r} "
                f"{self.image.data.shape} differ in shape.",
                "Choose the Labels layer of this image, or create a new annotation layer.",
            )

    def _add_labels(self, data: np.ndarray, classes: ClassTable) -> Labels:
        image = self.image
        classes = L.screen_classes(self.viewer, classes)
        self.classes = classes
        meta = L.numsnet_metadata(L.volume_meta(image), L.source_path(image), classes)
        meta[L.KEY].update(role="annotations", work_folder=str(self.workspace.folder))
        layer = self.viewer.add_labels(
            data, name=f"{image.name} annotations", scale=image.scale, metadata=meta
        )
        L.apply_classes(layer, classes)
        return layer

    def new_labels_layer(self, classes: ClassTable | None = None) -> Labels:
        """Create an empty annotation layer with ``classes`` and use it."""
        if self.image is None:
            raise NumsnetError("No image is chosen.", "Choose the image to annotate first.")
        if self.workspace is not None:  # the work saved so far survives the fresh start
            self.workspace.keep_current()
        self.classes = classes or self.classes
        layer = self._add_labels(np.zeros(self.image.data.shape, np.uint8), self.classes)
        self.set_labels(layer)
        self.edited.emit()
        return layer

    def set_classes(self, classes: ClassTable) -> None:
        """Use ``classes`` for the annotations (recolours the annotation layer)."""
        self.classes = classes
        if self.labels is not None:
            L.apply_classes(self.labels, classes)
            self.edited.emit()
        self.changed.emit()

    def load_classes(self, classes: ClassTable) -> None:
        """Use a class table from a file: colours made visible and distinct on screen."""
        self.set_classes(L.screen_classes(self.viewer, classes, exclude=self.labels))

    def add_class(self, name: str | None = None) -> int:
        """Add a class (``class K`` by default) with a free colour; returns its value."""
        value = self.classes.num_values
        taken = [*L.shown_colors(self.viewer, self.labels).values(), *self.classes.colors[1:]]
        probe = ClassTable.from_names(["background", "new"], avoid=taken)
        self.set_classes(self.classes.with_class(name or f"class {value}", probe.colors[1]))
        return value

    def rename_class(self, value: int, name: str) -> None:
        self.set_classes(self.classes.renamed(value, name))

    def recolor_class(self, value: int, color: str) -> None:
        self.set_classes(self.classes.recolored(value, color))

    def paint_class(self, value: int) -> None:
        """Select the annotation layer, the brush and label ``value``."""
        self._require_labels()
        self.viewer.layers.selection.active = self.labels
        self.labels.selected_label = int(value)
        self.labels.mode = "paint"

    def class_counts(self) -> np.ndarray:
        """Voxels of each class value in the annotation layer, ``(num_values,)``."""
        if self.labels is None:
            return np.zeros(self.classes.num_values, dtype=np.int64)
        data = np.asarray(self.labels.data).ravel()
        counts = np.bincount(data.astype(np.int64, copy=False), minlength=self.classes.num_values)
        return counts[: self.classes.num_values]

    # --- planner and annotated slices ------------------------------------------------

    def plan(self, sampling: SamplingConfig | None = None) -> SliceSplit:
        """Propose slices to annotate (Mid,Rand, 10% by default)."""
        self._require_image()
        self.sampling = sampling or self.sampling
        n = self.image.data.shape[0]
        self.split = plan_slices(n, planner_sampling(n, self.sampling))
        self.changed.emit()
        return self.split

    @property
    def planned(self) -> np.ndarray:
        """Planned slices (training and validation), ascending."""
        if self.split is None:
            return np.zeros(0, dtype=np.int64)
        return np.union1d(self.split.train, self.split.val)

    def current_slice(self) -> int:
        self._require_image()
        return L.current_slice(self.image, self.viewer)

    def go_to(self, z: int) -> None:
        self._require_image()
        L.show_slice(self.image, self.viewer, int(z))

    def next_slice(self) -> int | None:
        """Jump to the next planned slice not yet annotated (after the current one)."""
        todo = [int(z) for z in self.planned if int(z) not in self.annotated]
        if not todo:
            return None
        here = self.current_slice()
        target = next((z for z in todo if z > here), todo[0])
        self.go_to(target)
        return target

    def mark(self, z: int | None = None, done: bool = True) -> int:
        """Count slice ``z`` (default: the current one) as annotated, or not."""
        self._require_labels()
        z = self.current_slice() if z is None else int(z)
        if done:
            self.annotated.add(z)
        else:
            self.annotated.discard(z)
        self._sync()
        return z

    def painted_slices(self) -> np.ndarray:
        """Slices of the annotation layer with any non-zero label."""
        if self.labels is None:
            return np.zeros(0, dtype=np.int64)
        data = np.asarray(self.labels.data)
        return np.flatnonzero(data.reshape(len(data), -1).any(axis=1))

    def mark_painted(self) -> list[int]:
        """Count every painted slice as annotated; returns the slices added."""
        self._require_labels()
        added = sorted(set(self.painted_slices().tolist()) - self.annotated)
        self.annotated.update(added)
        self._sync()
        return added

    def accept_slice(self, source: np.ndarray, z: int | None = None) -> int:
        """Copy slice ``z`` of ``source`` ``(Z, H, W)`` into the annotations as ground truth.

        The copy is one undoable edit of the annotation layer and the slice counts as
        annotated from then on.
        """
        self._require_labels()
        z = self.current_slice() if z is None else int(z)
        plane = np.asarray(source[z])
        if plane.shape != self.labels.data.shape[1:]:
            raise NumsnetError(
                f"The slice to accept is {plane.shape}, the annotation slices "
                f"{self.labels.data.shape[1:]}.",
                "Accept slices of a layer of this image.",
            )
        if plane.size and int(plane.max()) >= self.classes.num_values:
            raise NumsnetError(
                f"Slice {z} holds label {int(plane.max())} but the annotations have only "
                f"{self.classes.num_values} classes ({', '.join(self.classes.names)}).",
                "Accept into an annotation layer with matching classes (create one).",
            )
        rows, cols = np.indices(plane.shape).reshape(2, -1)
        index = (np.full(rows.size, z), rows, cols)
        hidden = not self.labels.visible  # napari slices hidden layers lazily, and
        if hidden:  # data_setitem needs the current slice: show the layer for the edit
            self.labels.visible = True
        try:
            self.labels.data_setitem(index, plane.ravel().astype(self.labels.data.dtype))
        finally:
            if hidden:
                self.labels.visible = False
        self.annotated.add(z)
        self._sync()
        return z

    def _sync(self) -> None:
        L.info(self.labels)["annotated"] = sorted(self.annotated)
        self.changed.emit()
        self.edited.emit()

    def _on_edit(self, event: Any = None) -> None:
        self.edited.emit()

    # --- to the core ----------------------------------------------------------------

    def annotated_stack(self) -> AnnotatedStack:
        """The image with its annotations; planned validation slices are held out."""
        self._require_labels()
        if not self.annotated:
            raise NumsnetError(
                "No slice is marked as annotated.",
                "Paint the planned slices and press 'Done' on each (empty slices too).",
            )
        val = [int(z) for z in (self.split.val if self.split is not None else [])]
        val = [z for z in val if z in self.annotated]
        if len(val) >= len(self.annotated):
            val = []
        return AnnotatedStack(
            L.stack_of(self.image),
            np.array(self.labels.data, copy=True),  # painting goes on while training
            sorted(self.annotated),
            val,
            name=self.image.name,
        )

    def save(self) -> Path | None:
        """Write the annotations to the work folder now; ``None`` when nothing to save."""
        if self.labels is None or self.workspace is None:
            return None
        self.workspace.save_annotations(
            np.asarray(self.labels.data), sorted(self.annotated), self.classes, self.sampling
        )
        return self.workspace.folder

    def _require_image(self) -> None:
        if self.image is None:
            raise NumsnetError("No image is chosen.", "Choose the image to annotate first.")

    def _require_labels(self) -> None:
        self._require_image()
        if self.labels is None:
            raise NumsnetError(
                "No annotation layer.", "Create an annotation layer or choose a Labels layer."
            )
