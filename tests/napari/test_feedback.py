"""Geometry and contrast, shortcuts, the plot, the newcomer's first steps."""

from __future__ import annotations

import time
import warnings

import nibabel as nib
import numpy as np
import pytest
from napari.utils.key_bindings import coerce_keybinding

from napari_numsnet import pipeline
from napari_numsnet._napari.main_widget import NumsnetWidget
from napari_numsnet._napari.plot import AXIS_WIDTH, REDRAW_MS
from napari_numsnet._napari.shortcuts import SHORTCUTS
from napari_numsnet._napari.view import viewer_camera
from napari_numsnet.engine.events import TrainEvent

pytestmark = pytest.mark.gui


def dock(viewer) -> NumsnetWidget:
    widget = NumsnetWidget(viewer)
    viewer.window.add_dock_widget(widget, name="NUMSnet")
    return widget


def test_an_identity_affine_does_not_turn_the_view(make_napari_viewer, tmp_path):
    data = np.random.default_rng(0).normal(300, 80, (8, 20, 24)).astype(np.float32)
    data[:, 0, 0] = 5000  # a few bright voxels must not set the contrast
    path = tmp_path / "mri.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(data, 0, 2), np.eye(4)), path)
    viewer = make_napari_viewer()
    viewer.open(path, plugin="napari-numsnet")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # viewer.camera is deprecated
        warnings.simplefilter("error", DeprecationWarning)
        dock(viewer)
    assert tuple(viewer.dims.order) == (0, 1, 2)
    assert tuple(str(o) for o in viewer_camera(viewer).orientation2d) == ("down", "right")
    low, high = viewer.layers["mri"].contrast_limits
    assert 50 < low < 300 < high < 1000  # percentiles, not 0..5000


def test_kmeans_on_non_hu_data_says_so_in_the_images_units(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1).random((6, 16, 16)).astype(np.float32), name="x")
    widget = dock(viewer)
    tab = widget.pseudo_tab
    assert tab.window_label.text() == "Window" and not tab.low.isEnabled()
    assert tab.low.suffix() == "" and "percentiles" in tab.notes.text()
    # Six slices: the planner still proposes several training slices.
    assert len(widget.annotation.split.train) >= 3


def test_shortcuts_are_napari_keybindings_and_shown_in_tooltips(panel):
    viewer, widget = panel
    a = widget.annotation
    a.new_labels_layer()
    for action, (key, _) in SHORTCUTS.items():
        assert coerce_keybinding(key) in viewer.keymap, action
    assert "(Shift+D)" in widget.annotate_tab.buttons["Done ✓ and next"].toolTip()
    assert "(Shift+T)" in widget.train_tab.train_button.toolTip()
    assert "(Shift+A)" in widget.predict_tab.accept_button.toolTip()
    a.go_to(0)
    viewer.keymap[coerce_keybinding("Shift-N")](viewer)
    first = int(a.planned[0])
    assert a.current_slice() == first
    viewer.keymap[coerce_keybinding("Shift-D")](viewer)
    assert first in a.annotated and a.current_slice() != first


def test_the_panel_guides_the_first_steps(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-numsnet", "ct_sample")
    widget = dock(viewer)
    reference = viewer.layers["ct_sample reference"]
    assert not reference.visible
    combo = widget.labels_combo
    assert reference.name not in [combo.itemText(i) for i in range(combo.count())]
    assert widget.annotation.labels is None
    buttons = widget.annotate_tab.buttons
    assert buttons["New annotation layer"].property("next_step")
    assert "Step 1" in widget.annotate_tab.status.text()
    buttons["New annotation layer"].click()
    assert not buttons["New annotation layer"].property("next_step")
    assert buttons["Done ✓ and next"].property("next_step")
    # Model names as in the papers; the Advanced box takes no room when collapsed.
    train = widget.train_tab
    assert train.model.currentText().startswith("DRSegUNet")
    assert train.advanced.isHidden()
    train.advanced_button.click()
    assert not train.advanced.isHidden()


def test_the_restored_work_says_when_it_was_saved(panel, make_napari_viewer, ct_path, qtbot):
    viewer, widget = panel
    widget.annotation.new_labels_layer()
    widget.autosaver.save_now()
    viewer.close()
    viewer2 = make_napari_viewer()
    viewer2.open(ct_path, plugin="napari-numsnet")
    widget2 = dock(viewer2)
    label = widget2.annotate_tab.saved_label
    assert label.text().startswith(f"Restored work saved {time.strftime('%H:')}")
    assert str(widget2.annotation.workspace.folder) in label.toolTip()


def test_the_plot_draws_each_class_in_its_colour_and_throttles(panel, qtbot):
    _, widget = panel
    plot = widget.train_tab.plot
    classes = pipeline.load_sample().classes.distinct_from()
    plot.reset(classes)
    before = plot.redraws
    for step in range(1, 201):
        plot.add_event(TrainEvent("step", 1, step, 200, loss=1 / step))
    plot.add_event(
        TrainEvent("epoch", 1, 200, 200, loss=0.1, val_dice={"liver": 0.5, "lungs": 0.2})
    )
    qtbot.wait(REDRAW_MS + 400)
    assert plot.redraws - before <= 2  # 201 events, one or two redraws
    assert len(plot._step_curve.getData()[0]) == 200
    liver = plot._dice_curves["liver"]
    assert liver.opts["pen"].color().name() == classes.colors[1]
    assert list(liver.getData()[1]) == [0.5]


def test_a_redraw_touches_only_the_curves_that_changed(panel, qtbot):
    _, widget = panel
    plot = widget.train_tab.plot
    plot.reset(pipeline.load_sample().classes.distinct_from())
    plot.add_event(TrainEvent("step", 1, 1, 200, loss=1.0))
    plot.add_event(TrainEvent("epoch", 1, 1, 200, loss=1.0, val_dice={"liver": 0.5}))
    plot._redraw()
    calls: dict[str, int] = {"step": 0, "liver": 0}
    for name, curve in (("step", plot._step_curve), ("liver", plot._dice_curves["liver"])):
        original = curve.setData

        def counting(*args, name=name, original=original, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        curve.setData = counting
    plot.add_event(TrainEvent("step", 2, 2, 200, loss=0.5))
    plot._redraw()  # a new step, no new epoch: the Dice curve is left as it is
    assert calls == {"step": 1, "liver": 0}
    plot.add_event(TrainEvent("epoch", 2, 2, 200, loss=0.5, val_dice={"liver": 0.7}))
    plot._redraw()
    assert calls == {"step": 1, "liver": 1}
    assert list(plot._dice_curves["liver"].getData()[1]) == [0.5, 0.7]
    for chart in (plot.loss_plot, plot.dice_plot):  # fixed: new tick labels never re-lay out
        assert chart.getPlotItem().getAxis("left").width() == AXIS_WIDTH
