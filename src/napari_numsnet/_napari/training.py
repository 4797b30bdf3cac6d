"""Training in a napari thread worker: settings, state, stop flag, last checkpoint.

The worker runs :func:`napari_numsnet.pipeline.train`; its progress callback emits a Qt
signal from the worker thread, which Qt delivers in the main thread, so the viewer keeps
painting and scrolling while the model trains. Stop sets a ``threading.Event`` that the
engine checks before every optimiser step.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from napari_numsnet import pipeline
from napari_numsnet.cascade import Cascade, load_predictor, train_cascade
from napari_numsnet.config import (
    DEFAULT_MODEL,
    PRESETS,
    ModelConfig,
    PreprocessConfig,
    TrainConfig,
)
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.engine.events import TrainEvent, TrainState
from napari_numsnet.errors import NumsnetError

from .annotation import AnnotationController
from .errors import report


@dataclass
class TrainSettings:
    """What the Train panel writes and the worker reads.

    Attributes
    ----------
    model
        Registry name and widths (the number of classes comes from the class table).
    training
        Epochs of one run, batch size, learning rate, device, ...
    preprocess
        Slice size and normalisation; the CT window is added for HU images.
    cascade_region
        ``None`` for one model; a model here trains CHS-Net's cascade instead: this
        model segments the region (every annotated class together), then ``model``
        segments the classes inside it.
    """

    model: ModelConfig = field(default_factory=lambda: ModelConfig(DEFAULT_MODEL))
    cascade_region: ModelConfig | None = None
    training: TrainConfig = PRESETS["fast"].train
    preprocess: PreprocessConfig = PRESETS["fast"].preprocess

    def apply_preset(self, name: str) -> None:
        """Take the epochs, batch size, learning rate and slice size of a preset."""
        preset = PRESETS[name]
        self.training = preset.train.replace(device=self.training.device)
        self.preprocess = preset.preprocess


class _Relay(QObject):
    """Carries engine events from the worker thread to the main thread."""

    event = Signal(object)


class TrainController(QObject):
    """Starts, stops and continues training; keeps the last checkpoint of each image."""

    state_changed = Signal(object)
    """The :class:`TrainState` changed."""
    progress = Signal(object)
    """A :class:`TrainEvent` arrived (main thread)."""
    checkpoint_changed = Signal(object)
    """A new checkpoint is available (trained, loaded or restored)."""

    def __init__(self, annotation: AnnotationController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.annotation = annotation
        self.settings = TrainSettings()
        self.state = TrainState.IDLE
        self.worker: Any = None
        self.last_event: TrainEvent | None = None
        self._stop = threading.Event()
        self._relay = _Relay(self)
        self._relay.event.connect(self._on_event)
        self._checkpoint: Checkpoint | None = None
        self._checkpoint_folder: Path | None = None

    # --- the checkpoint of the current image -------------------------------------------

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The last checkpoint of the current image (loaded from its work folder once)."""
        workspace = self.annotation.workspace
        folder = workspace.folder if workspace is not None else None
        if folder != self._checkpoint_folder:
            self._checkpoint_folder = folder
            self._checkpoint = workspace.load_checkpoint() if workspace is not None else None
        return self._checkpoint

    def set_checkpoint(self, checkpoint: Checkpoint | Cascade | None, save: bool = True) -> None:
        """Make ``checkpoint`` the current image's last checkpoint (saved to its folder)."""
        workspace = self.annotation.workspace
        self._checkpoint_folder = workspace.folder if workspace is not None else None
        self._checkpoint = checkpoint
        if save and checkpoint is not None and workspace is not None:
            workspace.save_checkpoint(checkpoint)
        self.checkpoint_changed.emit(checkpoint)

    def load(self, path: str | Path) -> Checkpoint | Cascade:
        """Use a checkpoint or cascade file (e.g. trained elsewhere) as the last one."""
        checkpoint = load_predictor(path)
        self.set_checkpoint(checkpoint, save=False)
        return checkpoint

    # --- running -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.state is TrainState.TRAINING

    def start(self, resume: bool = False) -> Any:
        """Train on the annotated slices in a worker thread; ``resume`` continues the last
        checkpoint with the current annotations.

        Returns
        -------
        The napari worker (already started).

        Raises
        ------
        NumsnetError
            Already training, nothing annotated, or no checkpoint to continue.
        """
        if self.running:
            raise NumsnetError("Training is already running.", "Wait for it or press Stop.")
        stack = self.annotation.annotated_stack()
        classes = self.annotation.classes
        previous = self.checkpoint if resume else None
        if resume and previous is None:
            raise NumsnetError(
                "There is no checkpoint to continue from.", "Train once first, or load one."
            )
        model = self.settings.model.replace(num_classes=classes.num_values, exclusive=True)
        preprocess = pipeline.default_preprocess(stack.image, self.settings.preprocess)
        region = self.settings.cascade_region
        if resume and (region is not None or isinstance(previous, Cascade)):
            raise NumsnetError(
                "A cascade cannot be continued: its two stages are trained one after the "
                "other from the start.",
                "Press Train to train it again with the annotations as they are now.",
            )
        workspace = self.annotation.workspace
        self._stop.clear()
        self.last_event = None
        common = {
            "callback": self._relay.event.emit,
            "stop_event": self._stop,
            "_start_thread": False,
            "_ignore_errors": True,
        }
        if region is not None:
            worker = create_worker(
                train_cascade, stack, region, model, self.settings.training, preprocess,
                classes, **common,
            )  # fmt: skip
        else:
            worker = create_worker(
                pipeline.train, stack, model, self.settings.training, preprocess, classes,
                resume=previous, **common,
            )  # fmt: skip
        worker.returned.connect(lambda ckpt: self._on_returned(ckpt, workspace))
        worker.errored.connect(self._on_error)
        self.worker = worker
        self._set_state(TrainState.TRAINING)
        worker.start()
        return worker

    def stop(self) -> None:
        """Ask the running training to stop before its next step."""
        self._stop.set()

    def _on_event(self, event: TrainEvent) -> None:
        self.last_event = event
        self.progress.emit(event)

    def _on_returned(self, checkpoint: Checkpoint | Cascade, workspace: Any) -> None:
        state = TrainState(checkpoint.record.get("state", "done"))
        try:
            if workspace is not None:
                workspace.save_checkpoint(checkpoint)
        except Exception as exc:  # the checkpoint stays in memory; say why it was not saved
            report(exc)
        current = self.annotation.workspace
        if workspace is None or (current is not None and current.folder == workspace.folder):
            self.set_checkpoint(checkpoint, save=False)
        self._set_state(state)

    def _on_error(self, exc: BaseException) -> None:
        self._set_state(TrainState.CRASHED)
        report(exc)

    def _set_state(self, state: TrainState) -> None:
        self.state = state
        self.state_changed.emit(state)
