"""Reading stacks, writing labels with the same geometry, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_numsnet.errors import NumsnetError
from napari_numsnet.io import (
    VolumeMeta,
    atomic_path,
    atomic_write_bytes,
    label_dtype,
    read_labels,
    read_volume,
    volume_from_array,
    write_labels,
)

DATA = Path(__file__).parents[1] / ".." / "shared" / "data" / "ct_abdomen"
SEG = DATA / "example_seg.nii.gz"
CT = DATA / "example_ct_sm.nii.gz"
needs_data = pytest.mark.skipif(not SEG.is_file(), reason="shared data not present")


# --- atomic writes -----------------------------------------------------------------


def test_atomic_write_bytes_replaces_content(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    assert atomic_write_bytes(target, b"new") == target
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_atomic_path_keeps_double_suffix(tmp_path):
    with atomic_path(tmp_path / "labels.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        assert tmp.parent == tmp_path
        assert not tmp.exists()
        tmp.write_bytes(b"x")
    assert (tmp_path / "labels.nii.gz").read_bytes() == b"x"


def test_failure_mid_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "labels.npy"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.npy"]


def test_atomic_path_missing_folder(tmp_path):
    with pytest.raises(NumsnetError, match="does not exist"):
        atomic_write_bytes(tmp_path / "nope" / "a.bin", b"x")


# --- NIfTI round trips on real data ------------------------------------------------


@needs_data
def test_nifti_label_round_trip_is_exact(tmp_path):
    vol = read_volume(SEG)
    raw = nib.load(SEG)
    assert vol.data.shape == (30, 122, 101)  # stack axis k moved first
    assert vol.data.dtype == raw.get_data_dtype()
    np.testing.assert_array_equal(vol.data, np.moveaxis(np.asanyarray(raw.dataobj), 2, 0))
    assert vol.meta.spacing == (3.0, 3.0, 3.0)
    assert vol.meta.stack_shape == (30, 122, 101)

    out = write_labels(tmp_path / "seg.nii.gz", vol.data, vol.meta)
    back = read_volume(out)
    assert np.array_equal(back.meta.affine, vol.meta.affine)
    assert back.data.shape == vol.data.shape
    np.testing.assert_array_equal(back.data, vol.data)
    written = nib.load(out)
    assert written.shape == raw.shape
    assert written.get_data_dtype() == np.uint8
    assert int(written.header["sform_code"]) == int(raw.header["sform_code"])
    assert int(written.header["qform_code"]) == int(raw.header["qform_code"])
    assert written.header.get_slope_inter() == (None, None)


@needs_data
def test_ct_labels_written_next_to_image_keep_geometry(tmp_path):
    ct = read_volume(CT)
    assert ct.data.dtype == np.int16
    assert ct.data.min() == -1100 and ct.data.max() == 1207
    labels = (ct.data > 200).astype(np.int64) * 300  # needs uint16
    out = write_labels(tmp_path / "bone.nii", labels, ct.meta)
    written = nib.load(out)
    assert written.get_data_dtype() == np.uint16
    assert np.array_equal(written.affine, ct.meta.affine)
    back = read_labels(out, ct.meta)
    np.testing.assert_array_equal(back, labels)
    assert ct.meta.to_dict() == json.loads(json.dumps(ct.meta.to_dict()))
    assert VolumeMeta.from_dict(ct.meta.to_dict()) == ct.meta


@needs_data
def test_read_labels_rejects_misaligned_nifti(tmp_path):
    ct = read_volume(CT)
    raw = nib.load(SEG)
    moved = raw.affine.copy()
    moved[0, 3] += 1.0
    path = tmp_path / "moved.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(raw.dataobj), moved), path)
    with pytest.raises(NumsnetError, match="not aligned"):
        read_labels(path, ct.meta)


# --- TIFF and NumPy ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["stack.tif", "stack.tiff", "stack.npy"])
@pytest.mark.parametrize("stack_axis", [0, 2])
def test_tiff_and_npy_round_trip(tmp_path, name, stack_axis):
    rng = np.random.default_rng(0)
    file_array = rng.integers(0, 4, size=(5, 6, 7)).astype(np.uint8)
    src = tmp_path / name
    if name.endswith(".npy"):
        np.save(src, file_array)
    else:
        tifffile.imwrite(src, file_array, photometric="minisblack")
    vol = read_volume(src, stack_axis=stack_axis)
    np.testing.assert_array_equal(vol.data, np.moveaxis(file_array, stack_axis, 0))
    assert vol.meta.file_shape == (5, 6, 7)
    out = write_labels(tmp_path / ("out_" + name), vol.data, vol.meta)
    back = read_volume(out, stack_axis=stack_axis)
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.data.dtype == np.uint8
    np.testing.assert_array_equal(read_labels(out, vol.meta), vol.data)


def test_npy_labels_can_go_to_nifti(tmp_path):
    vol = volume_from_array(np.zeros((4, 5, 6), np.int16), stack_axis=1, spacing=(2, 1, 0.5))
    assert vol.data.shape == (5, 4, 6)
    assert vol.meta.spacing == (2.0, 1.0, 0.5)
    np.testing.assert_array_equal(np.diag(vol.meta.affine), [1.0, 2.0, 0.5, 1.0])
    labels = np.zeros((5, 4, 6), np.int64)
    labels[2, 1, 3] = 7
    out = write_labels(tmp_path / "l.nii.gz", labels, vol.meta)
    img = nib.load(out)
    assert img.shape == (4, 5, 6)
    assert np.asanyarray(img.dataobj)[1, 2, 3] == 7
    np.testing.assert_array_equal(img.affine, vol.meta.affine)


def test_trailing_singleton_axis_is_dropped(tmp_path):
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.int16), np.eye(4)), path)
    assert read_volume(path).data.shape == (6, 4, 5)


def test_label_dtype_fits():
    assert label_dtype(0, 255) == np.uint8
    assert label_dtype(0, 256) == np.uint16
    assert label_dtype(-1, 5) == np.int16
    assert label_dtype(0, 70000) == np.int32


# --- errors ------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(NumsnetError, match="No file"):
        read_volume(tmp_path / "absent.nii.gz")


def test_unknown_extension_lists_accepted(tmp_path):
    path = tmp_path / "scan.mha"
    path.write_bytes(b"x")
    with pytest.raises(NumsnetError, match=r"\.nii\.gz.*\.tiff?.*\.npy"):
        read_volume(path)


def test_2d_image_asks_for_a_stack(tmp_path):
    path = tmp_path / "slice.npy"
    np.save(path, np.zeros((8, 8)))
    with pytest.raises(NumsnetError, match="stack of slices") as info:
        read_volume(path)
    assert "np.stack" in info.value.fix


def test_4d_names_axis_to_drop(tmp_path):
    path = tmp_path / "cine.npy"
    np.save(path, np.zeros((10, 12, 3, 9)))
    with pytest.raises(NumsnetError, match="4D") as info:
        read_volume(path)
    assert "Drop axis 2" in info.value.fix


def test_rgb_tiff_is_not_a_stack(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((8, 9, 3), np.uint8), photometric="rgb")
    with pytest.raises(NumsnetError, match="colour"):
        read_volume(path)


@pytest.mark.parametrize("axis", [3, -4])
def test_stack_axis_out_of_range(tmp_path, axis):
    path = tmp_path / "v.npy"
    np.save(path, np.zeros((2, 3, 4)))
    with pytest.raises(NumsnetError, match="out of range"):
        read_volume(path, stack_axis=axis)


def test_corrupt_nifti(tmp_path):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(b"not a nifti file")
    with pytest.raises(NumsnetError, match="Could not read"):
        read_volume(path)


def test_write_labels_shape_mismatch(tmp_path):
    vol = volume_from_array(np.zeros((4, 5, 6)))
    with pytest.raises(NumsnetError, match=r"\(4, 5, 7\).*\(4, 5, 6\)"):
        write_labels(tmp_path / "l.npy", np.zeros((4, 5, 7), np.uint8), vol.meta)
    assert not any(tmp_path.iterdir())


def test_write_labels_rejects_fractions_and_overflow(tmp_path):
    vol = volume_from_array(np.zeros((2, 3, 4)))
    with pytest.raises(NumsnetError, match="non-integer"):
        write_labels(tmp_path / "l.npy", np.full((2, 3, 4), 0.5), vol.meta)
    with pytest.raises(NumsnetError, match="cannot be stored"):
        write_labels(tmp_path / "l.npy", np.full((2, 3, 4), 300), vol.meta, dtype=np.uint8)


def test_read_labels_checks_shape_and_values(tmp_path):
    image = volume_from_array(np.zeros((2, 3, 4)))
    np.save(tmp_path / "small.npy", np.zeros((2, 3, 5), np.uint8))
    with pytest.raises(NumsnetError, match="shape"):
        read_labels(tmp_path / "small.npy", image.meta)
    np.save(tmp_path / "frac.npy", np.full((2, 3, 4), 1.5))
    with pytest.raises(NumsnetError, match="non-integer"):
        read_labels(tmp_path / "frac.npy", image.meta)
    np.save(tmp_path / "whole.npy", np.full((2, 3, 4), 2.0))
    back = read_labels(tmp_path / "whole.npy", image.meta)
    assert back.dtype == np.uint8 and np.all(back == 2)
