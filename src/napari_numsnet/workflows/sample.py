"""The CT sample shipped with the package."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from napari_numsnet.io.classes import ClassTable, load_class_table
from napari_numsnet.io.labels import read_labels
from napari_numsnet.io.volume import Volume, read_volume

#: Window applied to CT in Hounsfield units before min-max scaling (HU).


@dataclass
class Sample:
    """The shipped CT sample: image, reference labels, class table, geometry."""

    volume: Volume
    labels: np.ndarray
    classes: ClassTable
    path: Path
    labels_path: Path


def sample_dir() -> Path:
    """Folder of the shipped sample data."""
    return Path(str(resources.files("napari_numsnet") / "sample_data"))


def load_sample() -> Sample:
    """The CT sample: 30 axial slices of 122 x 101 voxels, 3 mm, HU, five classes."""
    folder = sample_dir()
    volume = read_volume(folder / "ct_sample.nii.gz")
    labels = read_labels(folder / "ct_sample_labels.nii.gz", like=volume.meta)
    classes = load_class_table(folder / "ct_sample_classes.json")
    return Sample(
        volume, labels, classes, folder / "ct_sample.nii.gz", folder / "ct_sample_labels.nii.gz"
    )
