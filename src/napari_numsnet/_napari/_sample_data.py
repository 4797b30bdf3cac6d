"""npe2 sample data: the shipped CT stack with its reference labels (File > Open Sample)."""

from __future__ import annotations

from napari_numsnet.io.volume import read_volume
from napari_numsnet.workflows.sample import load_sample

from ._reader import LayerData, image_layer_data, labels_layer_data


def ct_sample() -> list[LayerData]:
    """CT, 30 axial slices of 122 x 101 voxels at 3 mm, HU, with five reference classes
    (a hidden Labels layer with role ``reference``, to compare with)."""
    sample = load_sample()
    image = image_layer_data(sample.volume, "ct_sample")
    labels_volume = read_volume(sample.labels_path)
    reference = labels_layer_data(
        sample.labels, labels_volume, "ct_sample reference", sample.classes, "reference"
    )
    # Hidden, and not offered as the annotation layer: it is the answer to compare with.
    reference[1]["visible"] = False
    return [image, reference]
