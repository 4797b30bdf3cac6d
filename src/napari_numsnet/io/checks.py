"""Checks made on an image file before and after it is read.

Before: the shape and type its header claims are checked against the file's size and
the memory available, so a 1 KB file that claims 10^9 voxels is refused at once with the
number. After: an affine that is not finite or singular is refused, integers that lose
precision as float32 are warned about.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

from napari_numsnet.errors import NumsnetError, resource_error
from napari_numsnet.io.resources import check_allocation, format_bytes

#: Largest ratio of data to file size that gzip can reach (deflate's limit is ~1032).
GZIP_MAX_RATIO = 1100
#: Integers beyond this magnitude lose precision as the model's float32 input.
FLOAT32_EXACT = 2**24


class NumsnetWarning(UserWarning):
    """Something was read that may give a wrong result; the message says what to check."""


def _claimed(path: Path, fmt: str) -> tuple[tuple[int, ...], np.dtype, int, int]:
    """Shape, dtype, bytes in memory and least file size a header claims (nothing read)."""
    if fmt == "nifti":
        img = nib.load(path)
        header = img.header
        shape = tuple(int(s) for s in header.get_data_shape())
        dtype = np.dtype(header.get_data_dtype())
        slope, inter = header.get_slope_inter()
        scaled = (slope not in (None, 1.0)) or (inter not in (None, 0.0))
        item = max(dtype.itemsize, 8) if scaled else dtype.itemsize
        stored = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        least = stored + int(header.get_data_offset())
        if path.name.lower().endswith(".gz"):
            least = stored // GZIP_MAX_RATIO
        return shape, dtype, int(np.prod(shape, dtype=np.float64)) * item, least
    if fmt == "numpy":
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle, max_header_size=100_000)
            offset = handle.tell()
        nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        return tuple(int(s) for s in shape), dtype, nbytes, offset + nbytes
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, dtype = tuple(int(s) for s in series.shape), np.dtype(series.dtype)
    return shape, dtype, int(np.prod(shape, dtype=np.float64)) * dtype.itemsize, 0


def check_claims(path: Path, fmt: str) -> None:
    """Refuse a file whose header claims more data than the file or the memory holds."""
    try:
        shape, dtype, nbytes, least = _claimed(path, fmt)
        size = path.stat().st_size
    except OSError as err:
        raise resource_error(err, path, "read") from err
    except Exception as err:
        raise NumsnetError(
            f"Could not read {path.name} as {fmt}: {err}",
            "Check that the file is complete and opens in another program.",
        ) from err
    if dtype.kind not in "biuf":
        raise NumsnetError(
            f"{path.name} holds voxels of type {dtype} (not plain numbers: complex, RGB, "
            "text or records).",
            "Convert it to one grey-level channel of integers or floats (e.g. the "
            "magnitude of complex data) and save that.",
        )
    if size < least:
        raise NumsnetError(
            f"{path.name}'s header claims {'x'.join(map(str, shape))} voxels of {dtype} "
            f"({format_bytes(nbytes)}), more than its {format_bytes(size)} can hold.",
            "The file is truncated or its header is damaged: export it again.",
        )
    check_allocation(
        nbytes,
        f"{path.name}'s header claims {'x'.join(map(str, shape))} voxels of {dtype}",
        "Crop or down-sample the volume (or check its header), or use a machine with more memory.",
    )


def check_values(array: np.ndarray, path: Path) -> None:
    """Warn when integer voxels lose information as the model's float32 input."""
    if array.dtype.kind in "iu" and array.dtype.itemsize >= 4 and array.size:
        low, high = int(array.min()), int(array.max())
        if max(abs(low), abs(high)) > FLOAT32_EXACT:
            warnings.warn(
                f"{path.name} holds {array.dtype} values {low}..{high}; beyond +-2^24 they "
                "lose precision as 32-bit floats. Rescale the image if its contrast lies in "
                "small differences of large values.",
                NumsnetWarning,
                stacklevel=3,
            )


def check_affine(affine: np.ndarray, path: Path) -> None:
    """Refuse an affine that is not finite or singular: geometry and volumes would be wrong."""
    linear = affine[:3, :3]
    if not np.all(np.isfinite(affine)):
        raise NumsnetError(
            f"{path.name}'s affine (voxel to mm) holds NaN or infinite values.",
            "Repair its header (e.g. nibabel: img.set_sform(np.diag([sx, sy, sz, 1]))) or "
            "save the voxels as .npy to open them without geometry.",
        )
    scale = float(np.max(np.abs(linear))) or 1.0
    if abs(float(np.linalg.det(linear / scale))) < 1e-9:
        raise NumsnetError(
            f"{path.name}'s affine (voxel to mm) is singular: a voxel size of 0 or two "
            "axes pointing the same way, so spacing and volumes would be wrong.",
            "Repair its header (e.g. nibabel: img.set_sform(np.diag([sx, sy, sz, 1]))) or "
            "save the voxels as .npy to open them without geometry.",
        )
