"""The npe2 contributions: manifest and menus, reader, writer, sample data."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet._napari._reader import find_class_table, is_label_volume, napari_get_reader
from napari_numsnet._napari._writer import write_labels
from napari_numsnet._napari.layers import KEY
from napari_numsnet.io.classes import load_class_table
from napari_numsnet.io.volume import VolumeMeta, read_volume
from napari_numsnet.workspace import Workspace

SAMPLE = pipeline.sample_dir()


def test_manifest_puts_the_panel_in_the_segment_menu():
    import npe2

    manager = npe2.PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest("napari-numsnet")
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == ["Few-shot segmentation"]
    segment = contributions.menus["napari/layers/segment"]
    assert [item.command for item in segment] == [contributions.widgets[0].command]
    assert contributions.readers[0].filename_patterns == ["*.nii", "*.nii.gz"]
    assert contributions.writers[0].layer_types == ["labels"]
    assert contributions.sample_data[0].key == "ct_sample"


def test_reader_accepts_nifti_only():
    assert napari_get_reader("ct.tif") is None
    assert napari_get_reader(["a.nii.gz", "b.npy"]) is None
    assert napari_get_reader("ct.nii.gz") is not None
    assert napari_get_reader(["a.nii", "b.NII.GZ"]) is not None


def test_reader_opens_image_with_spacing_and_geometry(tmp_path):
    path = tmp_path / "scan.nii.gz"
    shutil.copy(SAMPLE / "ct_sample.nii.gz", path)
    nifti = nib.load(path)
    (data, kwargs, kind), *rest = napari_get_reader(str(path))(str(path))
    assert kind == "image" and rest == []  # nothing autosaved yet
    assert data.shape == (30, 122, 101)  # the file's (122, 101, 30), stack axis first
    np.testing.assert_array_equal(data, np.moveaxis(np.asarray(nifti.dataobj), 2, 0))
    assert kwargs["scale"] == (3.0, 3.0, 3.0)
    meta = VolumeMeta.from_dict(kwargs["metadata"][KEY]["meta"])
    np.testing.assert_allclose(meta.affine, nifti.affine)
    assert kwargs["metadata"][KEY]["source_path"] == str(path)


def test_reader_opens_label_files_as_labels_with_their_class_table():
    path = SAMPLE / "ct_sample_labels.nii.gz"
    (data, kwargs, kind), *_ = napari_get_reader(str(path))(str(path))
    assert kind == "labels"
    np.testing.assert_array_equal(np.unique(data), np.arange(6))
    classes = load_class_table(SAMPLE / "ct_sample_classes.json")
    assert kwargs["metadata"][KEY]["classes"]["names"] == list(classes.names)
    spleen = [int(classes.colors[2][i : i + 2], 16) / 255 for i in (1, 3, 5)]
    np.testing.assert_allclose(kwargs["colormap"].color_dict[2][:3], spleen, atol=1e-6)
    assert find_class_table(path) == classes


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("ct.nii.gz", np.arange(-1000, 1000, dtype=np.int16).reshape(2, 10, 100), False),
        ("organs.nii.gz", np.repeat(np.arange(6, dtype=np.uint8), 20).reshape(2, 6, 10), True),
        ("lung_mask.nii", np.ones((2, 4, 4), dtype=np.float32), True),
        ("lung_mask.nii", np.full((2, 4, 4), 0.5, dtype=np.float32), False),
        ("case_seg.nii.gz", np.arange(200, dtype=np.int32).reshape(2, 10, 10), True),
        ("case.nii.gz", np.arange(200, dtype=np.int32).reshape(2, 10, 10), False),
        ("mri.nii.gz", np.linspace(0, 5, 200, dtype=np.float32).reshape(2, 10, 10), False),
    ],
)
def test_label_volumes_are_told_from_images(name, data, expected):
    assert is_label_volume(name, data) is expected


def test_writer_restores_the_source_geometry_and_writes_the_class_table(tmp_path):
    path = SAMPLE / "ct_sample_labels.nii.gz"
    data, kwargs, _ = napari_get_reader(str(path))(str(path))[0]
    edited = np.array(data, copy=True)
    edited[3, 10:20, 10:20] = 4
    written = write_labels(str(tmp_path / "edited"), edited, {"metadata": kwargs["metadata"]})
    assert written == [str(tmp_path / "edited.nii.gz"), str(tmp_path / "edited.classes.json")]
    out, source = nib.load(written[0]), nib.load(path)
    np.testing.assert_allclose(out.affine, source.affine)
    assert out.shape == source.shape and out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.moveaxis(np.asarray(out.dataobj), 2, 0), edited)
    # The table as the layer shows it: the near-white vertebrae recoloured for CT.
    sample_table = load_class_table(SAMPLE / "ct_sample_classes.json")
    assert load_class_table(written[1]) == sample_table.distinct_from()


def test_writer_without_geometry_uses_the_layer_scale(tmp_path):
    labels = np.zeros((4, 5, 6), dtype=np.uint8)
    labels[1, 2, 3] = 1
    written = write_labels(str(tmp_path / "plain.nii"), labels, {"scale": (2.0, 0.5, 0.5)})
    assert written == [str(tmp_path / "plain.nii")]
    out = nib.load(written[0])
    np.testing.assert_allclose(np.diag(out.affine), [2.0, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(np.asarray(out.dataobj), labels)


def test_sample_work_goes_to_the_user_folder_not_the_package(user_work_root):
    volume = read_volume(SAMPLE / "ct_sample.nii.gz")
    workspace = Workspace.for_image(volume.meta.source_path, None, volume.meta)
    assert workspace.folder.parent == user_work_root
    assert workspace.folder.name.startswith("ct_sample-")


@pytest.mark.gui
def test_sample_data_and_panel_from_the_plugin_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-numsnet", "ct_sample")
    image, reference = viewer.layers
    assert (image.name, reference.name) == ("ct_sample", "ct_sample reference")
    assert tuple(image.scale) == (3.0, 3.0, 3.0) and tuple(reference.scale) == (3.0, 3.0, 3.0)
    np.testing.assert_array_equal(reference.data, pipeline.load_sample().labels)
    _, widget = viewer.window.add_plugin_dock_widget("napari-numsnet", "Few-shot segmentation")
    assert widget.annotation.image is image
    assert widget.annotation.classes.names == pipeline.load_sample().classes.names
