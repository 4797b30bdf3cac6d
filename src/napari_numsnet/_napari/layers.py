"""Layer <-> core conversion: geometry, class tables and work folders kept in layer metadata.

Every layer the plugin makes carries ``layer.metadata["numsnet"]``, a plain dict:

- ``meta``: the image's :class:`~napari_numsnet.io.VolumeMeta` as a dict (geometry);
- ``source_path``: the image file the layer belongs to;
- ``classes``: the class table as ``{"names": [...], "colors": [...]}`` (Labels layers);
- ``role``: ``"image"``, ``"annotations"``, ``"prediction"``, ``"pseudo-labels"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.colormaps import DirectLabelColormap

from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.io.volume import VolumeMeta, volume_from_array
from napari_numsnet.workspace import Workspace

KEY = "numsnet"


def info(layer: Layer) -> dict[str, Any]:
    """The plugin's metadata dict of ``layer`` (created empty if missing)."""
    return layer.metadata.setdefault(KEY, {})


def numsnet_metadata(
    meta: VolumeMeta | None,
    source_path: str | None = None,
    classes: ClassTable | None = None,
    role: str | None = None,
) -> dict[str, Any]:
    """``layer.metadata`` for a new layer."""
    data: dict[str, Any] = {"meta": None if meta is None else meta.to_dict()}
    if source_path is not None:
        data["source_path"] = str(source_path)
    if classes is not None:
        data["classes"] = {"names": list(classes.names), "colors": list(classes.colors)}
    if role is not None:
        data["role"] = role
    return {KEY: data}


def source_path(layer: Layer) -> str | None:
    """The file ``layer`` was read from (plugin metadata first, then napari's source)."""
    path = info(layer).get("source_path") or getattr(layer.source, "path", None)
    return str(path) if path else None


def volume_meta(layer: Layer) -> VolumeMeta:
    """Geometry of ``layer``: from the plugin metadata, else from its data and scale."""
    stored = info(layer).get("meta")
    if stored:
        return VolumeMeta.from_dict(stored)
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise NumsnetError(
            f"Layer {layer.name!r} has {data.ndim} dimensions; a 3D stack is needed.",
            "Choose a 3D image (slices x rows x columns).",
        )
    spacing = tuple(float(s) for s in layer.scale[-3:])
    return volume_from_array(data, 0, spacing).meta


def stack_of(layer: Image) -> np.ndarray:
    """The ``(Z, H, W)`` voxels of an image layer, refusing RGB and non-3D data."""
    if getattr(layer, "rgb", False):
        raise NumsnetError(
            f"Layer {layer.name!r} is an RGB image.", "Convert it to grey levels first."
        )
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise NumsnetError(
            f"Layer {layer.name!r} has shape {data.shape}; a 3D stack (Z, H, W) is needed.",
            "Open a 3D volume, or stack the slices into one 3D array.",
        )
    return data


def workspace_for(layer: Image) -> Workspace:
    """The work folder of an image layer (beside its file, or keyed by a hash)."""
    path = source_path(layer)
    meta = volume_meta(layer)
    if path is None:
        return Workspace.for_image(None, stack_of(layer), meta)
    return Workspace.for_image(path, stack_of(layer), meta)  # voxels: the fingerprint


def classes_of(layer: Layer) -> ClassTable | None:
    """The class table stored with a Labels layer, or ``None``."""
    stored = info(layer).get("classes")
    if not stored:
        return None
    return ClassTable(tuple(stored["names"]), tuple(stored["colors"]))


def label_colormap(classes: ClassTable) -> DirectLabelColormap:
    """napari colours for a class table: background transparent, unknown values grey."""
    colors: dict[int | None, Any] = {v: c for v, c in classes.color_dict().items() if v}
    colors[0] = "transparent"
    colors[None] = "#808080"
    return DirectLabelColormap(color_dict=colors)


def class_features(classes: ClassTable) -> dict[str, np.ndarray]:
    """The ``features`` of a Labels layer: one row per label value, so that the status bar
    shows ``class: liver`` under the cursor."""
    return {"index": np.arange(classes.num_values), "class": np.array(classes.names)}


def apply_classes(layer: Labels, classes: ClassTable) -> None:
    """Store ``classes`` with ``layer``, colour it and name its values (features)."""
    info(layer)["classes"] = {"names": list(classes.names), "colors": list(classes.colors)}
    layer.colormap = label_colormap(classes)
    layer.features = class_features(classes)


def shown_colors(viewer: Any, exclude: Layer | None = None) -> dict[str, str]:
    """``{class name: colour}`` of the Labels layers with a class table in ``viewer``
    (background left out), for new layers to take colours that differ."""
    shown: dict[str, str] = {}
    for layer in viewer.layers:
        table = classes_of(layer) if isinstance(layer, Labels) and layer is not exclude else None
        if table is not None:
            for name, color in zip(table.names[1:], table.colors[1:], strict=True):
                shown.setdefault(name, color)
    return shown


def screen_classes(viewer: Any, classes: ClassTable, exclude: Layer | None = None) -> ClassTable:
    """``classes`` with colours visible on grey levels and distinct from the other layers'."""
    return classes.distinct_from(shown_colors(viewer, exclude))


def current_slice(layer: Layer, viewer: Any) -> int:
    """Index along the stack axis of the slice the viewer shows for ``layer``."""
    point = layer.world_to_data(viewer.dims.point)
    z = round(float(point[0]))
    return min(max(z, 0), layer.data.shape[0] - 1)


def show_slice(layer: Layer, viewer: Any, z: int) -> None:
    """Move the viewer to slice ``z`` of ``layer``."""
    world = layer.data_to_world([z] + [0] * (layer.ndim - 1))
    viewer.dims.set_point(0, float(world[0]))
