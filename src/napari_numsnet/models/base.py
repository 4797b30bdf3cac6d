"""What every registry model declares about itself."""

from __future__ import annotations

from enum import Enum


class ModelKind(str, Enum):
    """How a model sees a stack, which chooses its batch source and its predictor.

    ``SLICE``: one slice at a time, in any order. ``SEQUENCE``: ordered slices with
    features carried from slice to slice (the NUMSnet family). ``VOLUME``: 3D
    sub-volumes of consecutive slices.
    """

    SLICE = "slice"
    SEQUENCE = "sequence"
    VOLUME = "volume"
