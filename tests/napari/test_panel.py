"""The panel's parts: planner and annotated slices, autosave and restore, errors, a live UI."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_numsnet import pipeline
from napari_numsnet.engine.events import TrainState

pytestmark = pytest.mark.gui
MINUTE_MS = 60_000


def annotate_planned(widget, reference):
    """Copy the reference labels of the planned slices and mark them done (no painting)."""
    a = widget.annotation
    a.new_labels_layer(pipeline.load_sample().classes)
    for z in a.planned:
        a.labels.data[z] = reference[z]
        a.mark(int(z))


def test_planner_next_and_explicit_done(panel):
    _, widget = panel
    a = widget.annotation
    a.new_labels_layer()
    train, val = a.split.train.tolist(), a.split.val.tolist()
    planned = sorted(train + val)
    assert 0 not in planned and 1 not in planned
    a.go_to(0)
    # From slice 0, "next" visits the planned slices in order, then wraps around.
    visited = [a.next_slice() for _ in range(len(planned) + 1)]
    assert visited == [*planned, planned[0]]
    assert a.current_slice() == planned[0]
    # A painted slice does not count until it is marked done; an empty slice can count.
    a.labels.data[planned[0], 10:20, 10:20] = 1
    assert a.painted_slices().tolist() == [planned[0]]
    assert a.annotated == set()
    a.go_to(1)
    widget.annotate_tab.buttons["Done ✓ and next"].click()
    assert a.annotated == {1}
    assert not a.labels.data[1].any()
    assert a.mark_painted() == [planned[0]]
    assert a.annotated == {1, planned[0]}
    stack = a.annotated_stack()
    assert list(stack.annotated) == sorted({1, planned[0]})
    a.mark(1, done=False)
    assert a.annotated == {planned[0]}
    # The strip shows planned, painted and annotated slices.
    strip = widget.annotate_tab.strip
    assert (strip.n, strip.train, strip.val) == (30, set(train), set(val))
    assert strip.done == {planned[0]} and strip.painted == {planned[0]}
    # Re-planning with another strategy and fraction.
    widget.annotate_tab.strategy.setCurrentText("Mid,Seq")
    widget.annotate_tab.fraction.setValue(20.0)
    widget.annotate_tab.buttons["Plan slices"].click()
    assert a.split.train.tolist() == list(range(15, 21))


def test_autosave_is_debounced_and_restored_when_the_image_is_chosen_again(panel, qtbot):
    viewer, widget = panel
    a = widget.annotation
    layer = a.new_labels_layer()
    qtbot.waitUntil(lambda: not widget.autosaver.pending, timeout=5000)
    layer.paint((12, 60, 50), 1)  # a brush stroke at slice 12
    a.mark(12)
    assert widget.autosaver.pending  # saved after a quiet moment, not on every event
    qtbot.waitUntil(lambda: not widget.autosaver.pending, timeout=5000)
    painted = np.array(layer.data, copy=True)
    assert painted[12].any()
    saved = a.workspace.load_annotations()
    np.testing.assert_array_equal(saved.labels, painted)
    assert saved.annotated == [12]
    # Remove the annotation layer and choose the image again: the work comes back.
    viewer.layers.remove(layer)
    assert a.labels is None
    widget.image_combo.set_layer(None)
    a.set_image(None)
    a.set_image(viewer.layers["ct"])
    np.testing.assert_array_equal(a.labels.data, painted)
    assert a.annotated == {12}
    assert widget.labels_combo.current_layer() is a.labels


def test_errors_become_notifications(panel, qtbot, tiny_model, errors):
    _, widget = panel
    t = widget.training
    widget.train_tab.train_button.click()  # no annotation layer yet
    assert errors == ["No annotation layer. Create an annotation layer or choose a Labels layer."]
    assert t.state is TrainState.IDLE and widget.train_tab.train_button.isEnabled()
    widget.predict_tab._predict()
    assert errors[-1] == "There is no trained model. Train first, or load a checkpoint."
    # An error inside the worker: a label value the class table does not have.
    a = widget.annotation
    a.new_labels_layer()
    assert a.classes.num_values == 2
    a.labels.data[15, 50:60, 50:60] = 5
    a.mark(15)
    tiny_model(widget, epochs=1, batch_size=4)
    widget.train_tab.train_button.click()
    qtbot.waitUntil(lambda: t.state is not TrainState.TRAINING, timeout=MINUTE_MS)
    assert t.state is TrainState.CRASHED
    assert "5" in errors[-1] and len(errors) == 3, errors
    assert widget.train_tab.train_button.isEnabled()


def test_event_loop_keeps_running_while_training(panel, qtbot, tiny_model):
    _, widget = panel
    t = widget.training
    annotate_planned(widget, pipeline.load_sample().labels)
    labels = widget.annotation.labels
    tiny_model(widget, epochs=3)
    log = []
    timer = QTimer()
    timer.setInterval(5)

    def tick():
        log.append("tick")
        if t.running and not labels.data[27].any():
            labels.paint((27, 60, 50), 2)  # the user paints while the model trains
            log.append("painted")

    timer.timeout.connect(tick)
    t.progress.connect(lambda event: log.append(event.kind))
    timer.start()
    t.start()
    qtbot.waitUntil(lambda: not t.running, timeout=MINUTE_MS)
    timer.stop()
    assert t.state is TrainState.DONE
    start, end = log.index("start"), log.index("end")
    during = log[start:end]
    steps = [i for i, kind in enumerate(during) if kind == "step"]
    # The timer fired between training events, and painting worked meanwhile
    # (``tick`` paints only while the controller says it is training).
    assert "tick" in during[steps[0] : steps[-1]]
    assert "painted" in log[:end]
    assert labels.data[27, 60, 50] == 2


def test_a_deleted_panel_leaves_the_viewer_working(panel, qtbot):
    viewer, widget = panel
    layer = widget.annotation.new_labels_layer()
    viewer.window.remove_dock_widget(widget)
    with qtbot.waitSignal(widget.destroyed, timeout=5000):
        widget.deleteLater()
    viewer.dims.set_point(0, 9.0)  # the slider and the brush call no dead widget
    layer.paint((3, 40, 40), 1)
    viewer.layers.remove(layer)
    assert not layer.events.paint.callbacks


def test_presets_set_the_width_scale_and_the_default_model_is_the_benchmarks_choice(panel):
    from napari_numsnet.config import DEFAULT_MODEL
    from napari_numsnet.models import get_spec
    from napari_numsnet.presets import PRESETS

    _, widget = panel
    tab = widget.train_tab
    settings = widget.training.settings
    assert tab.model.currentData() == DEFAULT_MODEL == settings.model.name
    paper_widths = get_spec(DEFAULT_MODEL).default_widths

    tab.preset.setCurrentText("fast")
    assert tab.width_scale.currentText() == "1/2"
    assert settings.model.widths == tuple(round(w * 0.5) for w in paper_widths)
    assert settings.preprocess.size == PRESETS["fast"].preprocess.size

    tab.preset.setCurrentText("paper")
    assert tab.width_scale.currentText() == "1 (paper)"
    assert settings.model.widths is None
    assert settings.training.epochs == PRESETS["paper"].train.epochs


def test_the_model_follows_the_image_until_the_user_chooses_one(panel):
    """CT in HU selects DRSegUNet, an MRI-like image UNet; a model picked by hand stays."""
    from napari_numsnet.config import DEFAULT_MODEL, DEFAULT_MODEL_NOT_HU

    viewer, widget = panel
    tab, settings = widget.train_tab, widget.training.settings
    ct = viewer.layers["ct"]
    assert widget.annotation.image is ct
    assert tab.model.currentData() == DEFAULT_MODEL == "drsegunet"
    data = np.asarray(ct.data, dtype=np.float32)
    mri = viewer.add_image((data - data.min()) / (data.max() - data.min()), name="mri")
    widget.image_combo.set_layer(mri)
    assert widget.annotation.image is mri
    assert tab.model.currentData() == DEFAULT_MODEL_NOT_HU == "unet" == settings.model.name
    widget.image_combo.set_layer(ct)
    assert tab.model.currentData() == "drsegunet" == settings.model.name
    # The user picks a model (a click in the list): other images no longer change it.
    tab.model.setCurrentIndex(tab.model.findData("unetpp"))
    tab.model.activated.emit(tab.model.currentIndex())
    widget.image_combo.set_layer(mri)
    assert tab.model.currentData() == "unetpp" == settings.model.name
    assert "Hounsfield" in tab.model.toolTip()


def test_the_model_list_counts_the_parameters_at_the_chosen_widths(panel):
    """The fast preset trains half the paper's widths: the list says what is trained."""
    from napari_numsnet.config import ModelConfig
    from napari_numsnet.models import create_model, keras_parameter_count, scaled_widths

    _, widget = panel
    tab = widget.train_tab

    def count(name: str, scale: float) -> str:
        widths = scaled_widths(name, scale)
        n = keras_parameter_count(create_model(ModelConfig(name, 1, 3, widths=widths)))
        return f"({n / 1e6:.2g} M parameters)"

    tab.preset.setCurrentText("fast")
    index = tab.model.findData("drsegunet")
    assert tab.model.itemText(index).endswith(count("drsegunet", 0.5))
    tab.width_scale.setCurrentText("1 (paper)")
    assert tab.model.itemText(index).endswith(count("drsegunet", 1.0))
    assert count("drsegunet", 1.0) != count("drsegunet", 0.5)
    tab.width_scale.setCurrentText("1/4")
    cascade_index = tab.cascade.findData("unet")
    assert tab.cascade.itemText(cascade_index).endswith(count("unet", 0.25))


def test_the_ct_is_shown_the_radiological_way_without_moving_a_voxel(panel):
    viewer, widget = panel
    image = viewer.layers["ct"]
    before = np.array(image.data, copy=True)
    assert tuple(viewer.dims.order) == (0, 2, 1)  # anterior-posterior drawn vertically
    from napari_numsnet._napari.view import viewer_camera

    assert tuple(str(o) for o in viewer_camera(viewer).orientation2d) == ("up", "left")
    np.testing.assert_array_equal(image.data, before)
    widget.annotation.go_to(7)
    assert viewer.dims.current_step[0] == 7  # the slider still walks the slices
