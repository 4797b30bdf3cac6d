"""Training in a background thread: settings, state, stop flag, last checkpoint (no Qt).

The worker runs :func:`napari_numsnet.pipeline.train` on the current image and on any
extra image/annotation pairs; its progress events, result and error come back through
``deliver`` (see :mod:`.tasks`), so with the panel they arrive in Qt's main thread and the
viewer keeps painting while the model trains. Stop sets a ``threading.Event`` that the
engine checks before every optimiser step. Each run works on a copy of the settings taken
when it starts (:attr:`TrainController.run_settings`).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from psygnal import Signal

from napari_numsnet import pipeline
from napari_numsnet.config import DEFAULT_MODEL, ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine import threads as thread_policy
from napari_numsnet.engine.checkpoint import Checkpoint, load_checkpoint
from napari_numsnet.engine.events import TrainEvent, TrainState
from napari_numsnet.errors import NumsnetError
from napari_numsnet.presets import PRESETS
from napari_numsnet.workflows.cascade import Cascade, load_predictor, train_cascade
from napari_numsnet.workflows.retrain import DEFAULT_BUDGET_STEPS, RetrainResult, retrain

from . import layers as L
from .annotation import AnnotationController
from .errors import report
from .tasks import Deliver, call_now, frozen_heap, run_in_thread

VIEWER_RESERVE = 1
"""CPU cores the automatic thread policy leaves to the viewer."""


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
    transfer_from
        A checkpoint file whose layers (all but the head) start the model, for another
        class set (the NUMSnet paper's transfer); ``None`` starts from scratch.
    threads
        CPU threads for torch; ``None``: the automatic policy with a core left to the
        viewer (:func:`~napari_numsnet.engine.threads.apply_threads`). The worker applies
        it as the run starts, so the policy's load sampling never holds the GUI thread.
    """

    model: ModelConfig = field(default_factory=lambda: ModelConfig(DEFAULT_MODEL))
    cascade_region: ModelConfig | None = None
    training: TrainConfig = PRESETS["fast"].train
    preprocess: PreprocessConfig = PRESETS["fast"].preprocess
    transfer_from: str | None = None
    threads: int | None = None

    def apply_preset(self, name: str) -> None:
        """Take the budget, batch size, learning rate and slice size of a preset."""
        preset = PRESETS[name]
        self.training = preset.train.replace(device=self.training.device)
        self.preprocess = preset.preprocess


def pair_stack(image: Image, labels: Labels) -> pipeline.AnnotatedStack:
    """An extra training pair: the slices marked done in a plugin annotation layer, else
    every slice with a label (a fully labelled file)."""
    data = np.asarray(labels.data)
    if data.shape != np.asarray(image.data).shape:
        raise NumsnetError(
            f"Labels {labels.name!r} {data.shape} and image {image.name!r} "
            f"{np.asarray(image.data).shape} differ in shape.",
            "Pair each image with the Labels layer drawn on it.",
        )
    annotated = L.info(labels).get("annotated")
    if not annotated:
        annotated = np.flatnonzero(data.reshape(len(data), -1).any(axis=1)).tolist()
    if not annotated:
        raise NumsnetError(f"Labels {labels.name!r} are empty.", "Paint some slices first.")
    return pipeline.AnnotatedStack(
        L.stack_of(image), np.array(data, copy=True), sorted(annotated), [], name=image.name
    )


class TrainController:
    """Starts, stops and continues training; keeps the last checkpoint of each image.

    Parameters
    ----------
    annotation
        The annotations of the current image.
    deliver
        Runs a function where the GUI lives (see :mod:`.tasks`); default: at once.
    """

    state_changed = Signal(object)
    """The :class:`TrainState` changed."""
    progress = Signal(object)
    """A :class:`TrainEvent` arrived."""
    checkpoint_changed = Signal(object)
    """A new checkpoint is available (trained, loaded or restored)."""
    pairs_changed = Signal()
    """The extra image/annotation pairs changed."""
    retrained = Signal(object)
    """A :class:`~napari_numsnet.workflows.retrain.RetrainResult` (validation Dice before
    and after a short retrain)."""

    def __init__(self, annotation: AnnotationController, deliver: Deliver = call_now) -> None:
        self.annotation = annotation
        self.deliver = deliver
        self.settings = TrainSettings()
        self.run_settings: TrainSettings | None = None
        self.pairs: list[tuple[Image, Labels]] = []
        self.state = TrainState.IDLE
        self.worker: threading.Thread | None = None
        self.last_event: TrainEvent | None = None
        self._stop = threading.Event()
        self._checkpoint: Checkpoint | Cascade | None = None
        self._checkpoint_folder: Path | None = None

    # --- the checkpoint of the current image -------------------------------------------

    @property
    def checkpoint(self) -> Checkpoint | Cascade | None:
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

    # --- more than one stack -----------------------------------------------------------

    def add_pair(self, image: Image, labels: Labels) -> None:
        """Train on ``labels`` of ``image`` too (checked now, read when training starts)."""
        if image is self.annotation.image:
            raise NumsnetError(
                f"{image.name!r} is the image annotated in this panel; it is always trained on.",
                "Add another image with its labels.",
            )
        pair_stack(image, labels)
        self.pairs = [p for p in self.pairs if p[0] is not image] + [(image, labels)]
        self.pairs_changed.emit()

    def remove_pair(self, index: int) -> None:
        del self.pairs[index]
        self.pairs_changed.emit()

    # --- running -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.state is TrainState.TRAINING

    @property
    def busy(self) -> bool:
        """The worker thread is still alive (it may outlive the TRAINING state briefly)."""
        return self.worker is not None and self.worker.is_alive()

    def start(self, resume: bool = False) -> threading.Thread:
        """Train on the annotated slices in a worker thread; ``resume`` continues the last
        checkpoint with the current annotations.

        Raises
        ------
        NumsnetError
            Already training, nothing annotated, or no checkpoint to continue.
        """
        self._refuse_if_running()
        settings = copy.deepcopy(self.settings)  # this run's settings, whatever changes
        stacks = self._stacks()
        classes = self.annotation.classes
        region = settings.cascade_region
        previous = self._checkpoint_to_continue(region) if resume else None
        transfer = None
        if settings.transfer_from and not resume:
            transfer = load_checkpoint(settings.transfer_from)
        model = settings.model.replace(num_classes=classes.num_values, exclusive=True)
        preprocess = pipeline.default_preprocess(stacks[0].image, settings.preprocess)
        common = {"callback": self._on_progress, "stop_event": self._stop}
        if region is not None:

            def job() -> Any:
                return train_cascade(
                    stacks, region, model, settings.training, preprocess, classes, **common
                )
        else:

            def job() -> Any:
                return pipeline.train(
                    stacks, model, settings.training, preprocess, classes,
                    resume=previous, transfer_from=transfer, **common,
                )  # fmt: skip

        return self._launch(job, settings)

    def retrain(self, budget_steps: int = DEFAULT_BUDGET_STEPS) -> threading.Thread:
        """Continue the last checkpoint on the annotations as they are now for
        ``budget_steps`` steps (seconds, not a whole run), in a worker thread.

        The validation slices are scored before and after; :attr:`retrained` carries the
        result. A cascade cannot be continued: it raises, as :meth:`start` does.
        """
        self._refuse_if_running()
        previous = self._checkpoint_to_continue(region=None)
        settings = copy.deepcopy(self.settings)
        stacks = self._stacks()

        results: list[RetrainResult] = []

        def job() -> Checkpoint:
            result = retrain(
                previous, stacks, budget_steps, callback=self._on_progress, stop_event=self._stop
            )
            results.append(result)
            return result.checkpoint

        return self._launch(job, settings, then=lambda: self.retrained.emit(results[-1]))

    def _refuse_if_running(self) -> None:
        if self.running:
            raise NumsnetError("Training is already running.", "Wait for it or press Stop.")

    def _stacks(self) -> list[pipeline.AnnotatedStack]:
        """The current image's annotated stack, then the extra pairs'."""
        stacks = [self.annotation.annotated_stack()]
        return stacks + [pair_stack(image, labels) for image, labels in self.pairs]

    def _checkpoint_to_continue(self, region: ModelConfig | None) -> Checkpoint:
        """The last checkpoint, refused when there is none or it (or ``region``, a cascade
        about to be trained) is a cascade, which cannot be continued."""
        previous = self.checkpoint
        if previous is None:
            raise NumsnetError(
                "There is no checkpoint to continue from.", "Train once first, or load one."
            )
        if region is not None or isinstance(previous, Cascade):
            raise NumsnetError(
                "A cascade cannot be continued: its two stages are trained one after the "
                "other from the start.",
                "Press Train to train it again with the annotations as they are now.",
            )
        return previous

    def _launch(
        self,
        job: Callable[[], Checkpoint | Cascade],
        settings: TrainSettings,
        then: Callable[[], None] | None = None,
    ) -> threading.Thread:
        """Run ``job`` in the worker; the worker also saves its checkpoint to the work
        folder of the image it was started on (a write of tens of MB that held the GUI
        thread for about 150 ms when it was done there)."""
        workspace = self.annotation.workspace
        self._stop.clear()
        self.last_event = None
        self.run_settings = settings
        self._set_state(TrainState.TRAINING)

        def train_and_save() -> tuple[Checkpoint | Cascade, Exception | None]:
            with frozen_heap():
                thread_policy.apply_threads(settings.threads, reserve=VIEWER_RESERVE)
                checkpoint = job()
            return checkpoint, _save(checkpoint, workspace)

        def returned(outcome: tuple[Checkpoint | Cascade, Exception | None]) -> None:
            self._on_returned(*outcome, workspace)
            if then is not None:
                then()

        self.worker = run_in_thread(train_and_save, returned, self._on_error, self.deliver)
        return self.worker

    def stop(self) -> None:
        """Ask the running training to stop before its next step."""
        self._stop.set()

    def toggle(self) -> None:
        """Train when idle, stop when training (the Train/Stop shortcut)."""
        if self.running:
            self.stop()
        else:
            self.start(resume=False)

    def _on_progress(self, event: TrainEvent) -> None:  # worker thread
        with contextlib.suppress(RuntimeError):  # the panel was closed meanwhile
            self.deliver(lambda: self._on_event(event))

    def _on_event(self, event: TrainEvent) -> None:
        self.last_event = event
        self.progress.emit(event)

    def _on_returned(
        self, checkpoint: Checkpoint | Cascade, save_error: Exception | None, workspace: Any
    ) -> None:
        state = TrainState(checkpoint.record.get("state", "done"))
        if save_error is not None:  # the checkpoint stays in memory; say why it was not saved
            report(save_error)
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


def _save(checkpoint: Checkpoint | Cascade, workspace: Any) -> Exception | None:
    """Save ``checkpoint`` to ``workspace`` (if any); the error, if it could not be saved."""
    if workspace is None:
        return None
    try:
        workspace.save_checkpoint(checkpoint)
    except Exception as exc:  # reported in the GUI thread; training itself succeeded
        return exc
    return None
