"""Write label stacks in the layout and geometry of their image, and read them back.

Labels are ``(Z, H, W)`` integer stacks like the images (``napari_numsnet.io.volume``);
``write_labels`` undoes the move of the stack axis and keeps the NIfTI affine and header,
``read_labels`` checks that a label file matches an image before returning it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.atomic import atomic_path, write_fully
from napari_numsnet.io.volume import VolumeMeta, file_format, read_volume


def label_dtype(low: int, high: int) -> np.dtype:
    """Smallest integer dtype for labels in ``[low, high]``: uint8, uint16, int16, int32."""
    for dtype in (np.uint8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _integer_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Return ``labels`` as an integer array; floats must hold whole numbers."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if np.issubdtype(labels.dtype, np.integer):
        return labels
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)):
            bad = int(np.count_nonzero(~np.isfinite(labels)))
            raise NumsnetError(
                f"{name} holds {bad} NaN or infinite values.",
                "Labels must be whole numbers (0 = background); fix the file.",
            )
        if np.all(labels == np.round(labels)):
            if labels.size == 0:
                return labels.astype(np.uint8)
            return labels.astype(label_dtype(int(labels.min()), int(labels.max())))
    raise NumsnetError(
        f"{name} holds non-integer values (dtype {labels.dtype}); labels must be whole numbers.",
        "Use an integer label image (0 = background, 1, 2, ... = classes).",
    )


def write_labels(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    meta: VolumeMeta,
    dtype: np.dtype | type | None = None,
) -> Path:
    """Write a label stack in the layout and geometry of the image it belongs to.

    Parameters
    ----------
    path
        Destination; the format follows its extension (``.nii``, ``.nii.gz``, ``.tif``,
        ``.tiff``, ``.npy``). Written atomically.
    labels
        ``(Z, H, W)`` integer labels, ``meta.stack_shape``.
    meta
        Geometry of the image (from ``read_volume`` or ``volume_from_array``).
    dtype
        Output dtype; ``None`` takes the smallest of uint8, uint16, int16, int32 that
        holds the values.

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    NIfTI output keeps the affine and a copy of the source header (qform and sform
    included), with the data type set to ``dtype``, no intensity scaling and the
    display range cleared.
    """
    path = Path(path)
    fmt = file_format(path)
    labels = _integer_labels(labels, "The label stack")
    if labels.shape != meta.stack_shape:
        raise NumsnetError(
            f"Label stack of shape {labels.shape} does not match the image stack "
            f"{meta.stack_shape}.",
            "Write labels predicted for this very image, in (Z, H, W) order.",
        )
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    dtype = label_dtype(low, high) if dtype is None else np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer) or not (
        np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max
    ):
        raise NumsnetError(
            f"Labels {low}..{high} cannot be stored as {dtype}.",
            "Pass dtype=None to pick the smallest integer type that holds them.",
        )
    file_array = np.ascontiguousarray(np.moveaxis(labels, 0, meta.stack_axis).astype(dtype))
    data = b""
    if fmt != "nifti":  # serialised in memory: a full disk fails as a plain write
        buffer = io.BytesIO()
        if fmt == "tiff":
            tifffile.imwrite(buffer, file_array, photometric="minisblack")
        else:
            np.save(buffer, file_array, allow_pickle=False)
        data = buffer.getvalue()
    with atomic_path(path) as tmp:
        if fmt == "nifti":
            _write_nifti(tmp, file_array, meta)
        else:
            write_fully(tmp, data)
    return path


def _write_nifti(path: Path, file_array: np.ndarray, meta: VolumeMeta) -> None:
    header = meta.header
    image_class: type = nib.Nifti1Image
    if isinstance(header, nib.Nifti2Header):
        image_class = nib.Nifti2Image
    elif not isinstance(header, nib.Nifti1Header):
        header = None
    header = header.copy() if header is not None else None
    img = image_class(file_array, meta.affine, header=header)
    img.header.set_data_dtype(file_array.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = 0
    img.header["cal_max"] = 0
    nib.save(img, path)


def read_labels(path: str | os.PathLike[str], like: VolumeMeta) -> np.ndarray:
    """Read a label stack that belongs to an image read earlier.

    Parameters
    ----------
    path
        Label file (any format ``read_volume`` accepts).
    like
        Geometry of the image; the labels are read with its stack axis.

    Returns
    -------
    np.ndarray
        ``(Z, H, W)`` integer labels (the file's integer dtype; whole-number floats
        become the smallest integer dtype that holds them).

    Raises
    ------
    NumsnetError
        Shape differs from the image, NIfTI affines differ by more than 1e-3, or the
        values are not whole numbers.
    """
    volume = read_volume(path, stack_axis=like.stack_axis)
    name = Path(path).name
    if volume.meta.file_shape != tuple(like.file_shape):
        raise NumsnetError(
            f"Labels {name} have shape {volume.meta.file_shape} but the image has "
            f"{tuple(like.file_shape)}.",
            "Open the label file that belongs to this image.",
        )
    if volume.meta.source_format == "nifti" and like.source_format == "nifti":
        diff = float(np.max(np.abs(volume.meta.affine - np.asarray(like.affine))))
        if diff > 1e-3:
            raise NumsnetError(
                f"Labels {name} are not aligned with the image: their affines differ by "
                f"up to {diff:.4g} mm.",
                "Open the label file that belongs to this image, or resample it onto the "
                "image grid first.",
            )
    return _integer_labels(volume.data, f"Labels {name}")
