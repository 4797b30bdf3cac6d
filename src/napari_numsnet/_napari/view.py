"""Show the chosen image the radiological way (anterior up, patient's right on the left)."""

from __future__ import annotations

from typing import Any

from napari.layers import Image

from napari_numsnet.io.orientation import radiological_view

from . import layers as L


def show_radiological(viewer: Any, image: Image | None) -> bool:
    """Turn the 2D view of ``viewer`` so that ``image``, an axial stack, reads as on a
    radiology workstation; the data of every layer stay as they are.

    Returns ``False`` (and leaves the view alone) for images without NIfTI geometry,
    for stacks that are not axial, and for images that are not 3D.
    """
    if image is None or image.ndim != 3:
        return False
    view = radiological_view(L.volume_meta(image))
    if view is None:
        return False
    orientation = (view.vertical, view.horizontal)
    if (
        tuple(viewer.dims.order) != view.order
        or tuple(str(o) for o in viewer.camera.orientation2d) != orientation
    ):
        viewer.dims.order = view.order
        viewer.camera.orientation2d = orientation
        viewer.reset_view()  # fit the turned slice to the canvas
    return True


def viewer_camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, else ``camera``)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera
