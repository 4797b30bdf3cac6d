"""Read image stacks with their geometry.

In memory every volume is a stack ``(Z, H, W)``: the stack (slice) axis first, one 2D
slice per index. ``VolumeMeta`` remembers which axis of the file's array was the stack,
the file's affine and header, so that ``napari_numsnet.io.labels.write_labels`` can put
labels back into exactly the file's layout and geometry.

Formats: NIfTI (``.nii``, ``.nii.gz``; default stack axis 2, the file's k axis), TIFF
stacks (``.tif``, ``.tiff``; default axis 0) and NumPy (``.npy``; default axis 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import tifffile

from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.checks import NumsnetWarning, check_affine, check_claims, check_values

SourceFormat = Literal["nifti", "tiff", "numpy"]
__all__ = [
    "EXTENSIONS",
    "NumsnetWarning",
    "Volume",
    "VolumeMeta",
    "file_format",
    "read_volume",
    "volume_from_array",
]
#: Accepted extensions and the format each one means.
EXTENSIONS: dict[str, SourceFormat] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".npy": "numpy",
}
DEFAULT_STACK_AXIS: dict[str, int] = {"nifti": 2, "tiff": 0, "numpy": 0}


@dataclass(eq=False)
class VolumeMeta:
    """Geometry of a volume and how its file lays it out.

    Parameters
    ----------
    affine
        ``(4, 4) float64``: file voxel indices ``(i, j, k, 1)`` to world coordinates, mm.
    spacing
        Voxel size in mm in stack-first order ``(z, h, w)``.
    stack_axis
        Axis of the file's array that is the stack.
    file_shape
        Shape of the file's array.
    source_format
        ``nifti``, ``tiff`` or ``numpy``.
    source_path
        File the volume came from, or ``None`` for an in-memory array.
    header
        The NIfTI header read from the file, or ``None``. Not part of equality or repr.
    """

    affine: np.ndarray
    spacing: tuple[float, float, float]
    stack_axis: int
    file_shape: tuple[int, ...]
    source_format: SourceFormat
    source_path: str | None = None
    header: Any = field(default=None, compare=False, repr=False)

    @property
    def stack_shape(self) -> tuple[int, int, int]:
        """Shape of the in-memory stack ``(Z, H, W)``."""
        order = _axis_order(self.stack_axis)
        return tuple(int(self.file_shape[a]) for a in order)  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VolumeMeta):
            return NotImplemented
        return np.array_equal(self.affine, other.affine) and all(
            getattr(self, name) == getattr(other, name)
            for name in ("spacing", "stack_axis", "file_shape", "source_format", "source_path")
        )

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of everything but the header."""
        return {
            "affine": np.asarray(self.affine, dtype=np.float64).tolist(),
            "spacing": [float(s) for s in self.spacing],
            "stack_axis": int(self.stack_axis),
            "file_shape": [int(s) for s in self.file_shape],
            "source_format": self.source_format,
            "source_path": self.source_path,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VolumeMeta:
        """Inverse of ``to_dict`` (the header is not restored)."""
        return cls(
            affine=np.asarray(data["affine"], dtype=np.float64),
            spacing=tuple(float(s) for s in data["spacing"]),  # type: ignore[arg-type]
            stack_axis=int(data["stack_axis"]),
            file_shape=tuple(int(s) for s in data["file_shape"]),
            source_format=data["source_format"],
            source_path=data.get("source_path"),
        )


@dataclass(eq=False)
class Volume:
    """A stack and its geometry.

    Parameters
    ----------
    data
        ``(Z, H, W)``, the file's dtype (HU for CT, scanner units for MRI).
    meta
        Where it came from and how to write results back.
    """

    data: np.ndarray
    meta: VolumeMeta


def _axis_order(stack_axis: int) -> list[int]:
    return [stack_axis] + [a for a in range(3) if a != stack_axis]


def file_format(path: str | os.PathLike[str]) -> SourceFormat:
    """Return ``nifti``, ``tiff`` or ``numpy`` from the extension of ``path``.

    Raises
    ------
    NumsnetError
        The extension is none of ``EXTENSIONS``; the message lists them.
    """
    name = Path(path).name.lower()
    for ext, fmt in EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    raise NumsnetError(
        f"Unknown file type for {Path(path).name!r}.",
        f"Use one of: {', '.join(EXTENSIONS)}.",
    )


def _check_axis(stack_axis: int) -> int:
    if not -3 <= stack_axis <= 2:
        raise NumsnetError(
            f"stack_axis={stack_axis} is out of range for a 3D volume.",
            "Give 0, 1 or 2: the axis of the file's array along which the slices lie.",
        )
    return stack_axis % 3


def _check_3d(array: np.ndarray, path: Path) -> np.ndarray:
    # NIfTI writers often add trailing axes of length one, (X, Y, Z, 1): drop them.
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3:
        return array
    if array.ndim == 2:
        raise NumsnetError(
            f"{path.name} holds a single 2D image of shape {array.shape}; a stack of "
            "slices is needed.",
            "Stack the slices into one 3D array, e.g. np.save('stack.npy', "
            "np.stack(slices, axis=0)), or save them as one multi-page TIFF.",
        )
    if array.ndim == 4:
        drop = int(np.argmin(array.shape))
        raise NumsnetError(
            f"{path.name} holds a 4D array of shape {array.shape}; one 3D stack is needed.",
            f"Drop axis {drop} (length {array.shape[drop]}, likely time or channels), e.g. "
            f"save array.take(0, axis={drop}) to a new file and open that.",
        )
    raise NumsnetError(
        f"{path.name} holds a {array.ndim}D array of shape {array.shape}; one 3D stack is needed.",
        "Save a single 3D volume (slices x rows x columns) to a new file and open that.",
    )


def _load(path: Path, fmt: SourceFormat) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """Return the file's array, its affine (NIfTI only) and header (NIfTI only)."""
    check_claims(path, fmt)
    try:
        if fmt == "nifti":
            img = nib.load(path)
            affine = np.asarray(img.affine, dtype=np.float64)
            check_affine(affine, path)
            return np.asanyarray(img.dataobj), affine, img.header
        if fmt == "numpy":
            return np.load(path, allow_pickle=False), None, None
        with tifffile.TiffFile(path) as tif:
            array, axes = tif.series[0].asarray(), tif.series[0].axes
    except NumsnetError:
        raise
    except MemoryError as err:
        raise NumsnetError(
            f"Not enough memory to read {path.name}.",
            "Close other programs, crop the volume, or use a machine with more memory.",
        ) from err
    except Exception as err:
        raise NumsnetError(
            f"Could not read {path.name} as {fmt}: {err}",
            "Check that the file is complete and opens in another program.",
        ) from err
    if "S" in axes and array.ndim == 3:
        raise NumsnetError(
            f"{path.name} is a colour (RGB) image of shape {array.shape}, not a stack.",
            "Convert it to grey levels, or save the slices as a multi-page grey TIFF.",
        )
    return array, None, None


def _affine_from_spacing(file_spacing: tuple[float, float, float]) -> np.ndarray:
    return np.diag([*file_spacing, 1.0]).astype(np.float64)


def read_volume(path: str | os.PathLike[str], stack_axis: int | None = None) -> Volume:
    """Read a 3D stack from a NIfTI, TIFF or NumPy file.

    Parameters
    ----------
    path
        ``.nii``, ``.nii.gz``, ``.tif``, ``.tiff`` or ``.npy``.
    stack_axis
        Axis of the file's array along which the slices lie. ``None``: 2 for NIfTI (the
        file's k axis), 0 for TIFF and NumPy.

    Returns
    -------
    Volume
        ``data`` is ``np.moveaxis(file_array, stack_axis, 0)``, ``(Z, H, W)``, in the
        file's dtype (NIfTI slope and intercept applied by nibabel, nothing else).
        TIFF and NumPy files carry no geometry: spacing 1 mm, diagonal affine.

    Raises
    ------
    NumsnetError
        Missing file, unknown extension, unreadable file, not a 3D array, or
        ``stack_axis`` out of range.
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise NumsnetError(f"No file at {path}.", "Check the path and the file name.")
    axis = _check_axis(DEFAULT_STACK_AXIS[fmt] if stack_axis is None else stack_axis)
    array, affine, header = _load(path, fmt)
    array = _check_3d(array, path)
    check_values(array, path)
    if affine is None:
        affine = _affine_from_spacing((1.0, 1.0, 1.0))
    file_spacing = [float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))]
    meta = VolumeMeta(
        affine=affine,
        spacing=tuple(file_spacing[a] for a in _axis_order(axis)),  # type: ignore[arg-type]
        stack_axis=axis,
        file_shape=tuple(int(s) for s in array.shape),
        source_format=fmt,
        source_path=str(path),
        header=header,
    )
    return Volume(data=np.moveaxis(array, axis, 0), meta=meta)


def volume_from_array(
    array: np.ndarray,
    stack_axis: int = 0,
    spacing: tuple[float, float, float] | None = None,
) -> Volume:
    """Wrap an in-memory 3D array as a ``Volume``.

    Parameters
    ----------
    array
        3D array; ``stack_axis`` is the axis along which the slices lie.
    stack_axis
        Axis of ``array`` that becomes the stack axis.
    spacing
        Voxel size in mm in stack-first order ``(z, h, w)``; ``None`` means 1 mm.

    Returns
    -------
    Volume
        ``data`` is ``(Z, H, W)``; the affine is diagonal with the spacing in the
        array's own axis order.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise NumsnetError(
            f"Expected a 3D array, got shape {array.shape}.",
            "Pass one stack of slices (slices x rows x columns).",
        )
    axis = _check_axis(stack_axis)
    stack_spacing = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    if len(stack_spacing) != 3 or min(stack_spacing) <= 0:
        raise NumsnetError(
            f"spacing={spacing} is not three positive numbers.",
            "Give the voxel size in mm as (z, h, w), e.g. (3.0, 0.8, 0.8).",
        )
    file_spacing = [0.0, 0.0, 0.0]
    for pos, a in enumerate(_axis_order(axis)):
        file_spacing[a] = stack_spacing[pos]
    meta = VolumeMeta(
        affine=_affine_from_spacing(tuple(file_spacing)),  # type: ignore[arg-type]
        spacing=stack_spacing,  # type: ignore[arg-type]
        stack_axis=axis,
        file_shape=tuple(int(s) for s in array.shape),
        source_format="numpy",
        source_path=None,
    )
    return Volume(data=np.moveaxis(array, axis, 0), meta=meta)
