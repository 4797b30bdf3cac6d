"""The model a new training takes unless told: it follows the image (CT or not)."""

from __future__ import annotations

import numpy as np

from napari_numsnet.config import DEFAULT_MODEL, DEFAULT_MODEL_NOT_HU
from napari_numsnet.data.hounsfield import looks_like_hounsfield


def default_model(image: np.ndarray) -> str:
    """The model a new training takes unless told, by what ``image`` is.

    Parameters
    ----------
    image
        The (first) stack to train on, shape (Z, H, W), any dtype and units.

    Returns
    -------
    str
        :data:`~napari_numsnet.config.DEFAULT_MODEL` (DRSegUNet) for CT in Hounsfield
        units, :data:`~napari_numsnet.config.DEFAULT_MODEL_NOT_HU` (UNet) for anything
        else, as the benchmarks measured them (CT sample; ACDC's MRI).
    """
    return DEFAULT_MODEL if looks_like_hounsfield(image) else DEFAULT_MODEL_NOT_HU


def default_model_reason(name: str) -> str:
    """Why :func:`default_model` chose ``name``, for a status line."""
    if name == DEFAULT_MODEL:
        return "the default for CT in Hounsfield units"
    return "the default for images not in Hounsfield units (MRI and others)"
