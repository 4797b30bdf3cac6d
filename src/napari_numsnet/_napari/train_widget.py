"""Train tab: model, preset, steps or epochs, learning rate, batch size, device; progress, plot."""

from __future__ import annotations

import functools
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_numsnet.config import DEFAULT_MODEL, DEFAULT_MODEL_NOT_HU, ModelConfig
from napari_numsnet.engine import threads as thread_policy
from napari_numsnet.engine.class_weights import takes_class_weights
from napari_numsnet.engine.device import available_devices, describe_device, select_device
from napari_numsnet.engine.events import TrainEvent, TrainState
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import MODELS, SLICE_MODELS, get_spec, list_models, scaled_widths
from napari_numsnet.models.default_choice import default_model
from napari_numsnet.presets import PRESETS, SEMI_SUPERVISED

from .errors import reported
from .layers import stack_of
from .plot import TrainingPlot
from .shortcuts import with_shortcut
from .stacks_widget import StacksBox
from .training import VIEWER_RESERVE, TrainController

WIDTH_SCALES = {"1 (paper)": 1.0, "1/2": 0.5, "1/4": 0.25, "1/8": 0.125}


@functools.lru_cache(maxsize=len(WIDTH_SCALES))
def model_choices(width_scale: float = 1.0) -> list[tuple[str, str]]:
    """``(registry name, "Title (N.N M parameters)")`` at the paper's widths times
    ``width_scale``, 3 classes."""
    models = list_models(width_scale=width_scale)
    return [(s.name, f"{s.title} ({n / 1e6:.2g} M parameters)") for s, n in models]


class TrainWidget(QWidget):
    """Lays out the training settings; they are written into ``controller.settings``."""

    def __init__(self, controller: TrainController, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.model = QComboBox()  # titles here, the parameter counts once widths are known
        for name, spec in MODELS.items():
            self.model.addItem(spec.title, name)
        self.model.setCurrentIndex(self.model.findData(DEFAULT_MODEL))
        self.model.setToolTip(
            f"Unless you choose one, the model follows the image: "
            f"{get_spec(DEFAULT_MODEL).title} for CT in Hounsfield units, "
            f"{get_spec(DEFAULT_MODEL_NOT_HU).title} for other images (MRI and others), "
            "the most accurate of each in the benchmarks."
        )
        self.model_chosen = False  # the user picked a model: the image no longer does
        self._image: Any = None
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.epochs = QSpinBox(minimum=1, maximum=10_000)
        self.epochs.setToolTip("Passes over the annotated slices (presets that count epochs).")
        self.steps = QSpinBox(minimum=0, maximum=1_000_000, singleStep=50)
        self.steps.setSpecialValueText("auto")
        self.steps.setToolTip(
            "Optimiser steps of a run. auto: the preset's budget, which grows with the "
            "annotation (150 steps a slice, 400 to 6,000 in the fast preset)."
        )
        self.learning_rate = QDoubleSpinBox(decimals=6, minimum=1e-6, maximum=1.0, singleStep=1e-4)
        self.batch_size = QSpinBox(minimum=1, maximum=256)
        self.device = QComboBox()
        self.device.addItems(["auto", *available_devices()])
        self.device_label = QLabel()
        self.device_label.setWordWrap(True)
        self.size = QSpinBox(minimum=16, maximum=1024, singleStep=16)
        self.width_scale = QComboBox()
        self.width_scale.addItems(list(WIDTH_SCALES))
        self.augment = QCheckBox("rotation, shift, shear, zoom")
        self.semi_supervised = QCheckBox("learn from the unannotated slices")
        self.semi_supervised.setToolTip(
            "Semi-supervised: the model also learns its own confident labels on the "
            "unannotated slices, under UniMatch's perturbations (CutMix, jitter, blur), "
            f"once {SEMI_SUPERVISED['semi_supervised_min_slices']} slices are annotated. "
            "Slice models with exclusive classes; a training step costs about twice as much."
        )
        self.class_weights = QCheckBox("weigh rare classes more")
        self.class_weights.setToolTip(
            "Weigh the cross-entropy of each class by how rare it is among the annotated "
            "pixels (frequency). Helped small lesions (COVID ground-glass +0.03 Dice) and "
            "cost large organs a little (CT sample -0.01); off in the presets. Needs a "
            "loss with a cross-entropy: not the paper preset's BCE/2 + Dice."
        )
        self.context = QSpinBox(minimum=0, maximum=4, specialValueText="off", suffix=" each side")
        self.context.setToolTip(
            "2.5D input: this many neighbouring slices on each side of a slice go to the "
            "network as extra channels. Slice models only (the NUMSnet family carries "
            "features along the stack instead). off: the slice alone, as in the papers."
        )
        self.cascade = QComboBox()
        self.cascade.addItem("off (one model)", None)
        for name, spec in MODELS.items():
            self.cascade.addItem(spec.title, name)
        self.cascade.setToolTip(
            "CHS-Net's cascade: this model segments the region (all annotated classes "
            "together), then the model above segments the classes inside it."
        )
        self.threads = QSpinBox(minimum=0, maximum=256, specialValueText="auto")
        self.threads.setToolTip(
            "CPU threads for training and prediction. auto: the cores other programs leave "
            "free, less one for the viewer, looked at again between epochs."
        )
        thread_policy.apply_threads(reserve=VIEWER_RESERVE, window=0.05)  # for the device line
        self.train_button = QPushButton("Train")
        self.train_button.setToolTip(with_shortcut("Train a new model.", "train"))
        self.continue_button = QPushButton("Continue")
        self.continue_button.setToolTip("Continue the last checkpoint with the annotations now.")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip(with_shortcut("Stop before the next step.", "train"))
        self.stacks = StacksBox(controller)
        self.stacks_button = QPushButton("Training data: more stacks, transfer ▸")
        self.stacks_button.setCheckable(True)
        self.stacks_button.setFlat(True)
        self.stacks.setVisible(False)
        self.stacks_button.toggled.connect(self._show_stacks)
        self.advanced_button = QPushButton("Advanced ▸")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setFlat(True)
        self.advanced = QWidget()
        self.advanced_form = QFormLayout(self.advanced)
        """Rows of the Advanced box (more settings may be added here)."""
        self.progress_bar = QProgressBar()
        self.status = QLabel("Not trained yet.")
        self.status.setWordWrap(True)
        self.plot = TrainingPlot()
        self._build()
        self.preset.setCurrentText(controller.settings.training.preset)
        self._show_width_scale(controller.settings.training.preset)
        self._show_settings()
        self._connect()
        self._follow_image()
        self.on_state(controller.state)

    def _build(self) -> None:
        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("Preset", self.preset)
        form.addRow("Steps", self.steps)
        form.addRow("Epochs", self.epochs)
        form.addRow("Learning rate", self.learning_rate)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Device", self.device)
        form.addRow("", self.device_label)
        extra = self.advanced_form
        extra.setContentsMargins(0, 0, 0, 0)
        extra.addRow("Slice size (px)", self.size)
        extra.addRow("Width scale", self.width_scale)
        extra.addRow("Augmentation", self.augment)
        extra.addRow("Semi-supervised", self.semi_supervised)
        extra.addRow("Class weights", self.class_weights)
        extra.addRow("2.5D context", self.context)
        extra.addRow("Cascade: region model", self.cascade)
        extra.addRow("CPU threads", self.threads)
        self.advanced.setVisible(False)  # collapsed: no frame, no space
        self.advanced_button.toggled.connect(self._show_advanced)
        buttons = QHBoxLayout()
        for button in (self.train_button, self.continue_button, self.stop_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.stacks_button)
        layout.addWidget(self.stacks)
        layout.addWidget(self.advanced_button)
        layout.addWidget(self.advanced)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.plot, 1)

    def _connect(self) -> None:
        c = self.controller
        self.preset.currentTextChanged.connect(self._on_preset)
        for widget in (self.model, self.device, self.width_scale, self.cascade):
            widget.currentIndexChanged.connect(lambda *_: self.write_settings())
        self.width_scale.currentIndexChanged.connect(lambda *_: self._count_parameters())
        numbers = (self.steps, self.epochs, self.batch_size, self.size, self.learning_rate)
        for widget in (*numbers, self.threads, self.context):
            widget.valueChanged.connect(lambda *_: self.write_settings())
        self.augment.toggled.connect(lambda *_: self.write_settings())
        self.semi_supervised.toggled.connect(lambda *_: self.write_settings())
        self.class_weights.toggled.connect(lambda *_: self.write_settings())
        self.train_button.clicked.connect(lambda *_: self._start(resume=False))
        self.continue_button.clicked.connect(lambda *_: self._start(resume=True))
        self.stop_button.clicked.connect(lambda *_: c.stop())
        self.model.activated.connect(self._on_model_chosen)
        c.annotation.changed.connect(self._follow_image)
        c.state_changed.connect(self.on_state)
        c.progress.connect(self.on_event)
        c.checkpoint_changed.connect(lambda *_: self.on_state(c.state))

    def _on_model_chosen(self, *_: Any) -> None:
        self.model_chosen = True

    def _follow_image(self) -> None:
        """A newly annotated image selects its default model, until the user picks one."""
        image = self.controller.annotation.image
        if image is self._image:
            return
        self._image = image
        if image is None or self.model_chosen:
            return
        try:
            name = default_model(stack_of(image))
        except NumsnetError:  # not a 3D grey stack: the annotation tab says so
            return
        self.model.setCurrentIndex(self.model.findData(name))

    def _show_stacks(self, shown: bool) -> None:
        self.stacks.setVisible(shown)
        arrow = "▾" if shown else "▸"
        self.stacks_button.setText(f"Training data: more stacks, transfer {arrow}")

    def _show_advanced(self, shown: bool) -> None:
        self.advanced.setVisible(shown)
        self.advanced_button.setText("Advanced ▾" if shown else "Advanced ▸")

    # --- settings ----------------------------------------------------------------------

    def _on_preset(self, name: str) -> None:
        self.controller.settings.apply_preset(name)
        self.context.setValue(PRESETS[name].context)
        self._show_width_scale(name)
        self._show_settings()

    def _show_width_scale(self, preset: str) -> None:
        """Select the preset's width scale (the fast preset halves the paper's widths)."""
        scale = PRESETS[preset].width_scale
        names = [name for name, value in WIDTH_SCALES.items() if value == scale]
        self.width_scale.blockSignals(True)
        self.width_scale.setCurrentText(names[0] if names else "1 (paper)")
        self.width_scale.blockSignals(False)
        self._count_parameters()

    def _count_parameters(self) -> None:
        """Name each model with the parameter count it trains at the chosen widths."""
        texts = dict(model_choices(WIDTH_SCALES[self.width_scale.currentText()]))
        for box in (self.model, self.cascade):
            for index in range(box.count()):
                name = box.itemData(index)
                if name in texts:
                    box.setItemText(index, texts[name])

    def _show_settings(self) -> None:
        s = self.controller.settings
        widgets = (
            self.steps,
            self.epochs,
            self.batch_size,
            self.learning_rate,
            self.size,
            self.augment,
            self.semi_supervised,
            self.class_weights,
        )
        for widget in widgets:
            widget.blockSignals(True)
        counts_steps = self._preset_counts_steps()
        self.steps.setEnabled(counts_steps)
        self.epochs.setEnabled(not counts_steps)
        fixed = s.training.steps if s.training.steps_per_slice == 0 else 0
        self.steps.setValue(fixed if counts_steps else 0)
        self.epochs.setValue(s.training.epochs)
        self.batch_size.setValue(s.training.batch_size)
        self.learning_rate.setValue(s.training.learning_rate)
        self.size.setValue(s.preprocess.size or 256)
        self.augment.setChecked(s.training.augment)
        self.semi_supervised.setChecked(s.training.semi_supervised > 0)
        self.class_weights.setChecked(s.training.class_weights != "none")
        for widget in widgets:
            widget.blockSignals(False)
        self.write_settings()

    def _preset_counts_steps(self) -> bool:
        """``True`` when the chosen preset's budget is in steps (else in epochs)."""
        return PRESETS[self.preset.currentText()].train.steps > 0

    def write_settings(self) -> None:
        """Copy the fields into the controller's settings."""
        s = self.controller.settings
        spec = get_spec(self.model.currentData())
        scale = WIDTH_SCALES[self.width_scale.currentText()]
        takes_context = spec.name in SLICE_MODELS
        self.context.setEnabled(takes_context)
        context = self.context.value() if takes_context else 0
        s.model = s.model.replace(
            name=spec.name, widths=scaled_widths(spec.name, scale), context=context
        )
        region = self.cascade.currentData()
        s.cascade_region = (
            None if region is None else ModelConfig(region, widths=scaled_widths(region, scale))
        )
        preset = PRESETS[self.preset.currentText()].train
        if not self._preset_counts_steps():
            budget = {"epochs": self.epochs.value(), "steps": 0, "steps_per_slice": 0}
        elif self.steps.value() == 0:  # auto: the preset's rule
            budget = {
                "steps": preset.steps,
                "steps_per_slice": preset.steps_per_slice,
                "min_steps": preset.min_steps,
            }
        else:
            budget = {"steps": self.steps.value(), "steps_per_slice": 0}
        s.training = s.training.replace(
            **budget,
            batch_size=self.batch_size.value(),
            learning_rate=self.learning_rate.value(),
            device=self.device.currentText(),
            augment=self.augment.isChecked(),
        )
        if not self.semi_supervised.isChecked():
            s.training = s.training.replace(semi_supervised=0.0)
        elif s.training.semi_supervised <= 0:  # ticked under a preset without it
            s.training = s.training.replace(**SEMI_SUPERVISED)
        weighable = takes_class_weights(s.training.loss, s.model.exclusive)
        self.class_weights.setEnabled(weighable)
        weighted = weighable and self.class_weights.isChecked()
        s.training = s.training.replace(class_weights="frequency" if weighted else "none")
        s.preprocess = s.preprocess.replace(size=self.size.value())
        s.threads = self.threads.value() or None
        try:
            self.device_label.setText(describe_device(select_device(s.training.device)))
        except NumsnetError as exc:
            self.device_label.setText(str(exc))

    # --- running -----------------------------------------------------------------------

    @reported
    def _start(self, resume: bool) -> None:
        self.plot.reset(self.controller.annotation.classes, keep_history=resume)
        self.progress_bar.setValue(0)
        self.controller.start(resume=resume)

    def retrain(self, steps: int) -> None:
        """Continue the last checkpoint for ``steps`` steps; the plot keeps its history."""
        self.plot.reset(self.controller.annotation.classes, keep_history=True)
        self.progress_bar.setValue(0)
        self.controller.retrain(steps)

    def toggle(self) -> None:
        """Train when idle, stop when training (the Train/Stop shortcut)."""
        if self.controller.running:
            self.controller.stop()
        else:
            self._start(resume=False)

    def on_event(self, event: TrainEvent) -> None:
        self.plot.add_event(event)
        if event.total_steps:
            self.progress_bar.setMaximum(event.total_steps)
            self.progress_bar.setValue(event.step)
        if event.kind == "start":
            self.device_label.setText(event.message)
        elif event.kind == "epoch":
            dice = ", ".join(f"{k} {v:.2f}" for k, v in event.val_dice.items())
            self.status.setText(
                f"Epoch {event.epoch}: loss {event.loss:.3f}"
                + (f", Dice {dice}" if dice else "")
                + (f", {event.slices_per_second:.1f} slices/s" if event.slices_per_second else "")
            )

    def on_state(self, state: Any) -> None:
        c = self.controller
        training = state is TrainState.TRAINING
        self.train_button.setEnabled(not training)
        self.continue_button.setEnabled(not training and c.checkpoint is not None)
        self.stop_button.setEnabled(training)
        if state is TrainState.TRAINING:
            self.status.setText("Training…")
        elif state in (TrainState.DONE, TrainState.STOPPED) and c.checkpoint is not None:
            word = "stopped" if state is TrainState.STOPPED else "done"
            self.status.setText(
                f"Training {word}: {c.checkpoint.epochs_done} epoch(s) in all, saved."
            )
        elif state is TrainState.CRASHED:
            self.status.setText("Training failed (see the notification).")
