"""Class names and colours: on hover, in the class list, on CT, across layers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet._napari._reader import napari_get_reader
from napari_numsnet.io.classes import (
    MIN_DISTANCE,
    ClassTable,
    color_distance,
    load_class_table,
    visible_on_grey,
)

pytestmark = pytest.mark.gui
SAMPLE = pipeline.sample_dir()


def hover(viewer, layer, z: int, y: int, x: int) -> str:
    """The status bar text with the cursor over voxel ``(z, y, x)`` of ``layer``."""
    viewer.dims.set_point(0, float(layer.data_to_world([z, 0, 0])[0]))
    status = layer.get_status(layer.data_to_world([z, y, x]), world=True)
    return status["coordinates"] if isinstance(status, dict) else str(status)


def test_hovering_any_labels_layer_names_the_class(panel):
    viewer, widget = panel
    path = SAMPLE / "ct_sample_labels.nii.gz"
    (data, kwargs, _), *_ = napari_get_reader(str(path))(str(path))
    reference = viewer.add_labels(data, **kwargs)
    z, y, x = np.argwhere(data == 1)[0]
    assert "class: liver" in hover(viewer, reference, z, y, x)
    # The annotation layer the panel makes carries the table too.
    a = widget.annotation
    a.new_labels_layer()
    a.labels.data[3, 10, 10] = 1
    assert "class: class 1" in hover(viewer, a.labels, 3, 10, 10)
    # A Labels layer made elsewhere, chosen for the annotations, gets class 1, class 2, ...
    plain = np.zeros(a.labels.data.shape, np.uint8)
    plain[0, 1, 1] = 2
    layer = viewer.add_labels(plain, name="plain")
    widget.labels_combo.set_layer(layer)
    assert a.classes.names == ("background", "class 1", "class 2")
    assert "class: class 2" in hover(viewer, layer, 0, 1, 1)


def test_the_class_list_paints_adds_renames_recolours_and_saves(panel, tmp_path):
    viewer, widget = panel
    a, classes = widget.annotation, widget.annotate_tab.class_list
    widget.annotate_tab.buttons["New annotation layer"].click()
    assert classes.table.rowCount() == 1 and classes.selected_value() == 1
    value = classes.add()
    assert value == 2 and a.classes.names[2] == "class 2" and classes.table.rowCount() == 2
    assert color_distance(a.classes.colors[1], a.classes.colors[2]) >= MIN_DISTANCE
    classes.table.item(1, 1).setText("tumour")  # as typing the name in place
    assert a.classes.names[2] == "tumour"
    classes.select(2)
    assert a.labels.selected_label == 2 and a.labels.mode == "paint"
    assert viewer.layers.selection.active is a.labels
    classes.recolor("#ff8800")
    assert a.classes.colors[2] == "#ff8800"
    np.testing.assert_allclose(a.labels.colormap.color_dict[2][:3], [1.0, 0x88 / 255, 0.0])
    a.labels.data[5, 0:3, 0:4] = 2
    a.edited.emit()
    widget.autosaver.save_now()
    assert classes.table.item(1, 2).text() == "12"  # voxel count
    assert a.labels.features["class"].tolist() == ["background", "class 1", "tumour"]
    out = tmp_path / "my_classes.json"
    classes.save(str(out))
    assert load_class_table(out) == a.classes
    classes.load(str(SAMPLE / "ct_sample_classes.json"))
    assert a.classes.names == pipeline.load_sample().classes.names


def test_colours_stay_visible_on_ct_and_differ_between_layers(panel, qtbot):
    viewer, widget = panel
    sample = pipeline.load_sample().classes
    assert not visible_on_grey(sample.colors[5])  # the file's near-white vertebrae
    widget.annotate_tab._load_classes(str(SAMPLE / "ct_sample_classes.json"))
    annotation = widget.annotation.new_labels_layer()
    shown = widget.annotation.classes
    assert all(visible_on_grey(c) for c in shown.colors[1:])
    # k-means pseudo-labels ("lung", ...) take colours far from the annotations' ones.
    widget.pseudo_tab.k.setValue(2)
    widget.pseudo_tab.run_button.click()
    qtbot.waitUntil(lambda: not widget.pseudo.running, timeout=60_000)
    pseudo = viewer.layers["ct pseudo-labels"].metadata["numsnet"]["classes"]["colors"]
    for color in pseudo[1:]:
        assert visible_on_grey(color)
        assert min(color_distance(color, c) for c in shown.colors[1:]) >= MIN_DISTANCE
    assert annotation.features["class"].tolist()[1] == "liver"


def test_tables_pick_free_colours():
    table = ClassTable.from_names(["background", *(f"c{i}" for i in range(8))])
    for i, a in enumerate(table.colors[1:]):
        assert visible_on_grey(a)
        for b in table.colors[i + 2 :]:
            assert color_distance(a, b) >= MIN_DISTANCE
    same = ClassTable.from_names(["background", "liver", "x"]).distinct_from({"liver": "#123456"})
    assert same.colors[1] == "#123456"  # a class of the same name keeps its colour
