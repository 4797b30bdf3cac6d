"""The work folder: where it lies, atomic round trips of annotations and checkpoints, no Qt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_numsnet.config import ModelConfig, PreprocessConfig, SamplingConfig
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.io.volume import read_volume, volume_from_array
from napari_numsnet.models import create_model
from napari_numsnet.pipeline import sample_dir
from napari_numsnet.workspace import (
    WORK_ROOT_ENV,
    Workspace,
    data_key,
    image_stem,
    user_work_root,
    work_folder_for,
)

CLASSES = ClassTable.from_names(["background", "liver", "spleen"])


@pytest.fixture
def ct(tmp_path):
    path = tmp_path / "scans" / "patient 1.nii.gz"
    path.parent.mkdir()
    shutil.copy(sample_dir() / "ct_sample.nii.gz", path)
    return read_volume(path)


def test_core_does_not_import_napari_or_qt():
    code = (
        "import sys\n"
        "import napari_numsnet.pipeline, napari_numsnet.pseudolabel, napari_numsnet.workspace\n"
        "gui = ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui')\n"
        "print(','.join(m for m in gui if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


@pytest.mark.parametrize(
    ("name", "stem"),
    [("ct.nii.gz", "ct"), ("CT.NII", "CT"), ("stack.tif", "stack"), ("a.b.npy", "a.b")],
)
def test_image_stem(name, stem):
    assert image_stem(Path("/x") / name) == stem


def test_work_folder_lies_beside_the_image(ct):
    path = Path(ct.meta.source_path)
    assert work_folder_for(path) == path.parent / "patient 1.nii.gz.numsnet-work"


def test_work_folder_falls_back_to_the_user_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(WORK_ROOT_ENV, str(tmp_path / "root"))
    assert user_work_root() == tmp_path / "root"
    # The installed package's sample data is never written to.
    inside = work_folder_for(sample_dir() / "ct_sample.nii.gz")
    assert inside.parent == tmp_path / "root" and inside.name.startswith("ct_sample-")
    # A file whose folder is gone (moved, unmounted) gets a folder keyed by its path.
    gone = work_folder_for(tmp_path / "missing" / "ct.nii.gz")
    assert gone.parent == tmp_path / "root" and gone != inside
    assert work_folder_for(tmp_path / "missing" / "ct.nii.gz") == gone
    # An image without a file is keyed by its voxels.
    a = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    folder = work_folder_for(None, a)
    assert folder == tmp_path / "root" / f"array-{data_key(a)}.numsnet-work"
    assert work_folder_for(None, a.copy()) == folder
    assert work_folder_for(None, a + 1) != folder
    assert work_folder_for(None, a.astype(np.int32)) != folder
    with pytest.raises(NumsnetError, match="neither a file nor data"):
        work_folder_for(None)


def test_annotations_round_trip_as_nifti_in_the_image_geometry(ct):
    workspace = Workspace.for_image(ct.meta.source_path, None, ct.meta)
    assert not workspace.has_annotations() and workspace.load_annotations() is None
    labels = np.zeros(ct.data.shape, dtype=np.uint8)
    labels[4, 10:20, 30:40] = 2
    labels[9, 0, 0] = 1
    sampling = SamplingConfig(strategy="mid_seq", fraction=0.2, seed=3)
    save = workspace.save_annotations(labels, [9, 4, 12], CLASSES, sampling)
    assert [p.name for p in workspace.folder.iterdir()] == ["save-00000001"]
    assert sorted(p.name for p in save.iterdir()) == [
        "annotations.nii.gz",
        "classes.json",
        "work.json",
    ]
    saved = nib.load(workspace.annotations_path)
    np.testing.assert_allclose(saved.affine, nib.load(ct.meta.source_path).affine)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), np.moveaxis(labels, 0, 2))
    again = Workspace.for_image(ct.meta.source_path, None, ct.meta).load_annotations(ct.data.shape)
    np.testing.assert_array_equal(again.labels, labels)
    assert again.annotated == [4, 9, 12]  # slice 12 is annotated and empty
    assert again.classes == CLASSES
    assert again.sampling == sampling


def test_annotations_of_arrays_round_trip_as_npy(tmp_path):
    image = np.random.default_rng(0).normal(size=(5, 8, 9)).astype(np.float32)
    meta = volume_from_array(image).meta
    workspace = Workspace.for_image(None, image, meta, root=tmp_path)
    labels = np.zeros(image.shape, dtype=np.uint16)
    labels[2, 3, 4] = 300
    workspace.save_annotations(labels, [2])
    assert workspace.annotations_path.name == "annotations.npy"
    saved = workspace.load_annotations(image.shape)
    np.testing.assert_array_equal(saved.labels, labels)
    assert saved.labels.dtype == np.uint16
    assert saved.classes is None and saved.annotated == [2]


def test_annotations_of_another_image_are_refused(ct):
    workspace = Workspace.for_image(ct.meta.source_path, None, ct.meta)
    workspace.save_annotations(np.zeros(ct.data.shape, np.uint8), [1])
    with pytest.raises(NumsnetError, match="belong to another image"):
        workspace.load_annotations((30, 122, 100))


def test_damaged_record_says_what_to_do(ct):
    workspace = Workspace.for_image(ct.meta.source_path, None, ct.meta)
    workspace.save_annotations(np.zeros(ct.data.shape, np.uint8), [1])
    workspace.state_path.write_text('{"annotated": [1, ')
    with pytest.raises(NumsnetError, match=r"Move the folder .* away"):
        workspace.load_annotations()


def test_saving_again_replaces_files_atomically(ct):
    workspace = Workspace.for_image(ct.meta.source_path, None, ct.meta)
    for value in (1, 2, 3, 4, 5):
        workspace.save_annotations(np.full(ct.data.shape, value, np.uint8), [value], CLASSES)
    assert sorted(p.name for p in workspace.folder.iterdir()) == [
        "save-00000003",
        "save-00000004",
        "save-00000005",
    ]  # no temporary files left behind, the three newest saves kept
    assert sorted(p.name for p in workspace.saves()[0].iterdir()) == [
        "annotations.nii.gz",
        "classes.json",
        "work.json",
    ]
    assert json.loads(workspace.state_path.read_text())["annotated"] == [5]
    assert np.all(workspace.load_annotations().labels == 5)


def test_checkpoint_round_trip(tmp_path):
    workspace = Workspace(tmp_path / "work")
    assert workspace.load_checkpoint() is None
    model = create_model(ModelConfig("unet", num_classes=3, widths=(2, 2, 2, 2, 2)))
    checkpoint = Checkpoint.from_model(
        model,
        preprocess=PreprocessConfig(size=32),
        class_names=list(CLASSES.names),
        record={"epochs_done": 4, "state": "stopped"},
    )
    path = workspace.save_checkpoint(checkpoint)
    assert path == tmp_path / "work" / "model.numsnet.pt"
    loaded = workspace.load_checkpoint()
    assert loaded.epochs_done == 4 and loaded.class_names == list(CLASSES.names)
    for name, tensor in checkpoint.state_dict.items():
        assert loaded.state_dict[name].equal(tensor)
