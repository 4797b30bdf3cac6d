"""npe2 reader: NIfTI stacks as Image layers (scaled by the voxel spacing) or Labels layers.

A file is opened as labels when its name says so (``seg``, ``label``, ``mask``,
``annotation``) and its values are whole numbers, or when it holds integers with few
distinct values (at most :data:`MAX_LABEL_VALUES`). Opening an image whose work folder
holds autosaved annotations also restores them as a Labels layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_numsnet.data.hounsfield import looks_like_hounsfield
from napari_numsnet.io.classes import ClassTable, load_class_table
from napari_numsnet.io.labels import label_dtype
from napari_numsnet.io.volume import Volume, read_volume
from napari_numsnet.workspace import Workspace, image_stem

from .layers import class_features, label_colormap, numsnet_metadata

LayerData = tuple[Any, dict[str, Any], str]
MAX_LABEL_VALUES = 64
LABEL_WORDS = re.compile(r"(^|[^a-z])(seg|segmentation|labels?|mask|annotations?)([^a-z]|$)")
#: Display window for CT in HU (soft tissue, lungs still told apart from fat).
CT_CONTRAST = (-400.0, 400.0)
#: Display window of other images (MRI, microscopy, 8-bit): these percentiles of the voxels.
PERCENTILE_CONTRAST = (1.0, 99.5)


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_nifti` for ``.nii`` / ``.nii.gz`` paths, else ``None``."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(str(p).lower().endswith((".nii", ".nii.gz")) for p in paths):
        return None
    return read_nifti


def is_label_volume(name: str, data: np.ndarray) -> bool:
    """Whether a stack should open as labels (see the module docstring)."""
    integral = np.issubdtype(data.dtype, np.integer) or data.dtype == bool
    sample = data[:: max(1, len(data) // 16)]
    floating = np.issubdtype(data.dtype, np.floating)
    if not integral and not (floating and np.all(sample == np.round(sample))):
        return False
    if LABEL_WORDS.search(image_stem(name).lower()):
        return bool(sample.min() >= 0)
    return integral and bool(sample.min() >= 0) and np.unique(sample).size <= MAX_LABEL_VALUES


def find_class_table(path: Path) -> ClassTable | None:
    """The class table beside a label file: ``<stem>.classes.json`` or ``<base>_classes.json``."""
    stem = image_stem(path)
    base = re.sub(r"[_.-]?(seg|segmentation|labels?|mask|annotations?)$", "", stem)
    for name in (f"{stem}.classes.json", f"{stem}_classes.json", f"{base}_classes.json"):
        candidate = path.parent / name
        if candidate.is_file():
            return load_class_table(candidate)
    return None


def image_layer_data(volume: Volume, name: str) -> LayerData:
    """An Image layer for a stack: scale from the spacing, geometry in the metadata."""
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": tuple(volume.meta.spacing),
        "metadata": numsnet_metadata(volume.meta, volume.meta.source_path, role="image"),
    }
    kwargs["contrast_limits"] = display_window(volume.data)
    return volume.data, kwargs, "image"


def display_window(data: np.ndarray) -> tuple[float, float]:
    """Contrast limits: the soft-tissue window for CT in HU, else the 1st..99.5th
    percentiles of (a sample of) the voxels, so that a few bright voxels do not hide
    the rest."""
    if looks_like_hounsfield(data):
        return CT_CONTRAST
    sample = np.asarray(data[:: max(1, len(data) // 32)], dtype=np.float64)
    low, high = np.percentile(sample, PERCENTILE_CONTRAST) if sample.size else (0.0, 1.0)
    if high <= low:
        low, high = float(sample.min(initial=0.0)), float(sample.max(initial=1.0))
    return (float(low), float(high) if high > low else float(low) + 1.0)


def labels_layer_data(
    labels: np.ndarray, volume: Volume, name: str, classes: ClassTable | None, role: str
) -> LayerData:
    """A Labels layer on the grid of ``volume``, coloured and named by ``classes``
    (``class 1``, ``class 2``, ... when the file has no class table)."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
        labels = labels.astype(label_dtype(low, high))
    top = int(labels.max()) if labels.size else 0
    if classes is None and top < MAX_LABEL_VALUES:
        classes = ClassTable.default(max(top + 1, 2))
    if classes is not None:
        classes = classes.distinct_from()  # colours visible on grey levels
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": tuple(volume.meta.spacing),
        "metadata": numsnet_metadata(volume.meta, volume.meta.source_path, classes, role),
    }
    if classes is not None:
        kwargs["colormap"] = label_colormap(classes)
        kwargs["features"] = class_features(classes)
    return labels, kwargs, "labels"


def _open_in_viewer(folder: Any) -> bool:
    """Whether the current viewer already holds the annotation layer of ``folder``."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # no viewer (reading from a script)
        return False
    if viewer is None:
        return False
    for layer in viewer.layers:
        meta = layer.metadata.get("numsnet", {}) if isinstance(layer.metadata, dict) else {}
        if meta.get("role") == "annotations" and meta.get("work_folder") == str(folder):
            return True
    return False


def restored_annotations(volume: Volume, name: str) -> list[LayerData]:
    """The autosaved annotations of an image, as a Labels layer (none if nothing saved)."""
    workspace = Workspace.for_image(volume.meta.source_path, volume.data, volume.meta)
    if _open_in_viewer(workspace.folder):
        return []  # opened again: the annotation layer in the viewer is the one to use
    saved = workspace.load_annotations(volume.data.shape)
    if saved is None:
        return []
    layer = labels_layer_data(
        saved.labels, volume, f"{name} annotations", saved.classes, "annotations"
    )
    layer[1]["metadata"]["numsnet"].update(
        annotated=list(saved.annotated), work_folder=str(workspace.folder)
    )
    return [layer]


def read_nifti(path: str | list[str]) -> list[LayerData]:
    """Read one or more NIfTI files into napari layer data."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    layers: list[LayerData] = []
    for item in paths:
        file = Path(item)
        volume = read_volume(file)
        name = image_stem(file)
        if is_label_volume(file.name, volume.data):
            classes = find_class_table(file)
            layers.append(labels_layer_data(volume.data, volume, name, classes, "labels"))
        else:
            layers.append(image_layer_data(volume, name))
            layers.extend(restored_annotations(volume, name))
    return layers
