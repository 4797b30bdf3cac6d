"""Reading image stacks and writing label stacks with their geometry.

Everything in memory is a stack ``(Z, H, W)``, the stack (slice) axis first.
"""

from napari_numsnet.io.atomic import atomic_path, atomic_write_bytes
from napari_numsnet.io.labels import label_dtype, read_labels, write_labels
from napari_numsnet.io.volume import (
    EXTENSIONS,
    Volume,
    VolumeMeta,
    file_format,
    read_volume,
    volume_from_array,
)

__all__ = [
    "EXTENSIONS",
    "Volume",
    "VolumeMeta",
    "atomic_path",
    "atomic_write_bytes",
    "file_format",
    "label_dtype",
    "read_labels",
    "read_volume",
    "volume_from_array",
    "write_labels",
]
