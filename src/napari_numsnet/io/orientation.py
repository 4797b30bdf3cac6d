"""How to show an axial stack the way radiologists read it.

The radiological convention for an axial slice: anterior at the top, the patient's right
on the viewer's left (as if looking up from the feet). A stack ``(Z, H, W)`` read from a
NIfTI file keeps the file's voxel axes, which rarely match it (a RAS file shows the
patient lying on the side). Rather than move any voxel, the viewer is told which array
axis to draw vertically and which way each axis runs; the data, and so the annotations
and predictions, stay in the file's layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nibabel.orientations import aff2axcodes

from napari_numsnet.io.volume import VolumeMeta

Vertical = Literal["up", "down"]
Horizontal = Literal["left", "right"]


@dataclass(frozen=True)
class ViewOrientation:
    """A 2D view of a ``(Z, H, W)`` stack.

    Attributes
    ----------
    order
        Axis order for the viewer: the last two are drawn vertically, then horizontally
        (``(0, 1, 2)``: rows of H, columns of W; ``(0, 2, 1)``: transposed).
    vertical
        ``down`` when the index of the vertical axis grows down the screen, ``up`` when
        it grows up.
    horizontal
        ``right`` when the index of the horizontal axis grows to the right, ``left``
        when it grows to the left.
    """

    order: tuple[int, int, int]
    vertical: Vertical
    horizontal: Horizontal


def radiological_view(meta: VolumeMeta) -> ViewOrientation | None:
    """The view of an axial stack with anterior up and the patient's right on the left.

    Parameters
    ----------
    meta
        Geometry of the stack; its affine maps file voxels to RAS+ world coordinates
        (mm), as in NIfTI.

    Returns
    -------
    ViewOrientation or None
        ``None`` when the geometry is unknown (TIFF and NumPy files) or the stack axis
        does not run head to feet (sagittal, coronal or oblique short-axis stacks have
        no single radiological view).
    """
    if meta.source_format != "nifti":
        return None
    codes = aff2axcodes(meta.affine)
    file_axes = [meta.stack_axis] + [a for a in range(3) if a != meta.stack_axis]
    stack_codes = [codes[a] for a in file_axes]  # world direction of array axes 0, 1, 2
    if stack_codes[0] not in ("S", "I"):
        return None
    in_plane = {stack_codes[1]: 1, stack_codes[2]: 2}
    front_back = next((c for c in in_plane if c in ("A", "P")), None)
    left_right = next((c for c in in_plane if c in ("L", "R")), None)
    if front_back is None or left_right is None:
        return None
    vertical_axis, horizontal_axis = in_plane[front_back], in_plane[left_right]
    return ViewOrientation(
        order=(0, vertical_axis, horizontal_axis),
        # Anterior at the top: an index growing towards posterior grows down the screen.
        vertical="down" if front_back == "P" else "up",
        # The patient's right on the viewer's left: an index growing towards the
        # patient's left grows to the right of the screen.
        horizontal="right" if left_right == "L" else "left",
    )
