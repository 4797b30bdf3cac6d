"""The radiological view: anterior up, the patient's right on the viewer's left."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet.io.orientation import ViewOrientation, radiological_view
from napari_numsnet.io.volume import VolumeMeta, volume_from_array


def _meta(axes: np.ndarray, stack_axis: int = 2, shape=(8, 8, 8)) -> VolumeMeta:
    affine = np.eye(4)
    affine[:3, :3] = axes
    return VolumeMeta(affine, (1.0, 1.0, 1.0), stack_axis, shape, "nifti")


def _screen(plane: np.ndarray, view: ViewOrientation) -> np.ndarray:
    """What the viewer draws of ``plane`` (H, W): row 0 at the top, column 0 at the left."""
    if view.order == (0, 2, 1):
        plane = plane.T
    if view.vertical == "up":
        plane = plane[::-1]
    if view.horizontal == "left":
        plane = plane[:, ::-1]
    return plane


# Every axial file layout: the in-plane file axes in either order, each either way.
LAYOUTS = [
    np.column_stack([sx * np.eye(3)[p[0]], sy * np.eye(3)[p[1]], [0, 0, sz * 1.0]])
    for p in ((0, 1), (1, 0))
    for sx, sy, sz in itertools.product((1, -1), repeat=3)
]


@pytest.mark.parametrize("axes", LAYOUTS)
def test_the_patients_right_front_is_drawn_top_left(axes):
    meta = _meta(axes)
    view = radiological_view(meta)
    assert view is not None
    # RAS+ world: +x points to the patient's right, +y to the front.
    world = np.array([3.0, 3.0, 0.0])  # a marker right and anterior of the centre
    centre = np.array([3.5, 3.5, 3.5])
    voxel = np.rint(np.linalg.solve(axes, world) + centre).astype(int)
    volume = np.zeros((8, 8, 8), np.uint8)
    volume[tuple(voxel)] = 1
    stack = np.moveaxis(volume, meta.stack_axis, 0)
    screen = _screen(stack[voxel[meta.stack_axis]], view)
    rows, cols = np.nonzero(screen)
    assert rows[0] < 4 and cols[0] < 4, (view, rows, cols)  # top left quadrant


def test_the_ct_sample_is_turned_and_flipped():
    meta = pipeline.load_sample().volume.meta
    assert radiological_view(meta) == ViewOrientation((0, 2, 1), "up", "left")


def test_no_view_without_geometry_or_for_a_non_axial_stack():
    assert radiological_view(volume_from_array(np.zeros((4, 8, 8))).meta) is None
    sagittal = _meta(np.eye(3), stack_axis=0)  # slices along x (left-right)
    assert radiological_view(sagittal) is None
