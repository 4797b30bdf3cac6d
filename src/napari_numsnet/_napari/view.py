"""Show the chosen image the radiological way (anterior up, patient's right on the left)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from napari.layers import Image

from napari_numsnet.io.orientation import radiological_view
from napari_numsnet.io.volume import VolumeMeta

from . import layers as L


def orientation_known(meta: VolumeMeta) -> bool:
    """Whether the stack's affine says how the patient lies.

    A NIfTI file whose ``sform_code`` and ``qform_code`` are both 0 has no orientation
    (nibabel then makes up a diagonal affine); a diagonal affine without offset, the
    identity scaled by the spacing, is what tools write when they know nothing either.
    Files without NIfTI geometry (TIFF, NumPy) never have one.
    """
    if meta.source_format != "nifti":
        return False
    header = getattr(meta, "header", None)
    if header is None and meta.source_path and Path(meta.source_path).is_file():
        with contextlib.suppress(Exception):
            header = nib.load(meta.source_path).header
    if header is not None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
                return False
    affine = np.asarray(meta.affine, dtype=np.float64)
    linear, offset = affine[:3, :3], affine[:3, 3]
    plain = np.allclose(linear, np.diag(np.abs(np.diag(linear)))) and np.allclose(offset, 0)
    return not plain


def show_radiological(viewer: Any, image: Image | None) -> bool:
    """Turn the 2D view of ``viewer`` so that ``image``, an axial stack, reads as on a
    radiology workstation; the data of every layer stay as they are.

    Returns ``False`` (and leaves the view alone) for images without a known
    orientation (no NIfTI geometry, or an identity affine), for stacks that are not
    axial, and for images that are not 3D.
    """
    if image is None or image.ndim != 3:
        return False
    meta = L.volume_meta(image)
    if not orientation_known(meta):
        return False
    view = radiological_view(meta)
    if view is None:
        return False
    orientation = (view.vertical, view.horizontal)
    camera = viewer_camera(viewer)
    if (
        tuple(viewer.dims.order) != view.order
        or tuple(str(o) for o in camera.orientation2d) != orientation
    ):
        viewer.dims.order = view.order
        camera.orientation2d = orientation
        viewer.reset_view()  # fit the turned slice to the canvas
    return True


def viewer_camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, else ``camera``)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera
