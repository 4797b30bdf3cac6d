"""The NUMSnet dock widget: image and annotation layer on top, one tab per step of the loop."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QFormLayout, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from napari_numsnet.workflows.cascade import Cascade

from . import layers as L
from .annotate_widget import AnnotateWidget
from .annotation import AnnotationController
from .errors import reported
from .export_widget import ExportWidget
from .predict_widget import PredictWidget
from .prediction import PredictController
from .pseudo import PseudoController
from .pseudo_widget import PseudoWidget
from .qt_helpers import Autosaver, LayerCombo, MainThread
from .self_learning import self_learning_panel
from .shortcuts import bind_shortcuts
from .train_widget import TrainWidget
from .training import TrainController
from .view import show_radiological

MIN_WIDTH = 440
"""Pixels: wide enough for every tab without a horizontal scroll bar."""


def _scrolled(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(widget)
    return area


def _not_reference(layer: Any) -> bool:
    """Reference labels (the sample's answer) are not offered as the annotation layer."""
    return L.info(layer).get("role") != "reference"


def _release(
    annotation: AnnotationController,
    viewer: Any,
    callbacks: tuple[Callable[..., Any], Callable[..., Any]],
    stops: tuple[Callable[[], None], ...],
) -> None:
    """Disconnect a deleted panel from the viewer and its layers; stop running workers."""
    on_step, on_removing = callbacks
    annotation.changed.disconnect()
    annotation.edited.disconnect()
    annotation.set_labels(None)
    viewer.dims.events.current_step.disconnect(on_step)
    viewer.layers.events.removing.disconnect(on_removing)
    for stop in stops:
        stop()


class NumsnetWidget(QWidget):
    """Annotate about 10% of the slices, train in the background, predict, correct, export.

    Parameters
    ----------
    napari_viewer
        The viewer the panel docks into.
    """

    def __init__(self, napari_viewer: Any, parent=None) -> None:
        super().__init__(parent)
        # napari hands plugins a proxy that wraps every attribute access anew, so that the
        # same layer would not compare identical twice; the panel keeps the viewer itself.
        napari_viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.viewer = napari_viewer
        self.main_thread = MainThread(self)
        self.annotation = AnnotationController(napari_viewer)
        self.training = TrainController(self.annotation, deliver=self.main_thread.call)
        self.prediction = PredictController(self.training)
        self.pseudo = PseudoController(self.annotation, self)
        self.autosaver = Autosaver(self.annotation.save, parent=self)
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.labels_combo = LayerCombo(
            napari_viewer, Labels, none_text="(none)", accept=_not_reference
        )
        self.annotate_tab = AnnotateWidget(self.annotation)
        self.train_tab = TrainWidget(self.training)
        self.levels_panel = self_learning_panel(self.pseudo, self.training)
        self.pseudo_tab = PseudoWidget(self.pseudo, self.levels_panel)
        self.predict_tab = PredictWidget(self.prediction, self.retrain)
        self.export_tab = ExportWidget(self.training)
        self.tabs = QTabWidget()
        for tab, title in (
            (self.annotate_tab, "Annotate"),
            (self.train_tab, "Train"),
            (self.pseudo_tab, "Pseudo-labels"),
            (self.predict_tab, "Predict && correct"),
            (self.export_tab, "Export"),
        ):
            self.tabs.addTab(_scrolled(tab), title)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Annotations", self.labels_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.tabs)
        self.setMinimumWidth(MIN_WIDTH)
        self._fitted = False
        self._connect()
        self._on_image(self.image_combo.current_layer())
        unbind = bind_shortcuts(
            napari_viewer,
            {
                "done": reported(self.annotate_tab._done),
                "next": reported(self.annotation.next_slice),
                "accept": self.predict_tab._accept,
                "suggest": self.predict_tab._next_suggested,
                "train": reported(self.train_tab.toggle),
            },
        )
        # The viewer outlives the panel: on deletion, stop the callbacks into it.
        self.destroyed.connect(
            functools.partial(
                _release,
                self.annotation,
                self.viewer,
                (self.annotate_tab._on_step, self._on_removing),
                (
                    self.training.stop,
                    getattr(self.levels_panel, "controller", self.training).stop,
                    unbind,
                ),
            )
        )

    def _connect(self) -> None:
        a = self.annotation
        self.image_combo.layer_changed.connect(self._on_image)
        self.labels_combo.layer_changed.connect(self._on_labels)
        a.changed.connect(self._sync_labels_combo)
        a.edited.connect(self.autosaver.schedule)
        self.autosaver.saved.connect(self.annotate_tab.show_saved)
        self.autosaver.failed.connect(self.annotate_tab.show_save_failed)
        self.viewer.layers.events.removing.connect(self._on_removing)
        self.prediction.predicted.connect(lambda *_: self._show_suggestion())

    def _show_suggestion(self) -> None:
        """Tint the strip by the last prediction's correction scores (lowest 0, top 1)."""
        suggestion = self.prediction.suggestion
        if suggestion is None:
            self.annotate_tab.strip.set_scores({})
            return
        ranked = suggestion.top()
        values = suggestion.scores[ranked] if ranked else np.zeros(0)
        low, top = (float(values.min()), float(values.max())) if ranked else (0.0, 0.0)
        span = top - low
        normalised = {z: (suggestion.scores[z] - low) / span for z in ranked} if span > 0 else {}
        first = suggestion.top(1)
        self.annotate_tab.strip.set_scores(normalised, first[0] if first else -1)

    @reported
    def _on_image(self, layer: Image | None) -> None:
        self.autosaver.flush()
        self.annotation.set_image(layer)
        show_radiological(self.viewer, layer)

    @reported
    def _on_labels(self, layer: Labels | None) -> None:
        if layer is not self.annotation.labels:
            self.autosaver.flush()
            self.annotation.set_labels(layer)

    def _sync_labels_combo(self) -> None:
        if self.labels_combo.current_layer() is not self.annotation.labels:
            self.labels_combo.set_layer(self.annotation.labels)

    def _on_removing(self, event: Any) -> None:
        # Save before the annotation layer (or its image) leaves the viewer.
        layer = self.viewer.layers[event.index]
        if layer is self.annotation.labels or layer is self.annotation.image:
            self.autosaver.save_now()

    def retrain(self) -> None:
        """Continue the last checkpoint for the Predict tab's short budget with the
        annotations as they are now (a cascade, which cannot be continued, is trained
        again in full)."""
        self.tabs.setCurrentIndex(1)
        cascade = self.training.settings.cascade_region is not None or isinstance(
            self.training.checkpoint, Cascade
        )
        if cascade:
            self.train_tab._start(resume=False)
        else:
            self.train_tab.retrain(self.predict_tab.retrain_steps.value())

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self._fitted:  # the canvas narrows when the panel is docked: fit it again
            self._fitted = True
            QTimer.singleShot(0, self.viewer.reset_view)

    def hideEvent(self, event: Any) -> None:
        # Closing the viewer window hides the panel first: save what is pending.
        self.autosaver.flush()
        super().hideEvent(event)

    def closeEvent(self, event: Any) -> None:
        self.autosaver.flush()
        self.training.stop()
        if hasattr(self.levels_panel, "controller"):
            self.levels_panel.controller.stop()
        super().closeEvent(event)
