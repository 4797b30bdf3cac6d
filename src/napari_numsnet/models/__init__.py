"""The networks: UNet, wUNet, UNet++, NUMSnet, NUMS-all and DRSegUNet, behind one registry."""

from napari_numsnet.models.blocks import Carry, SegmentationOutput, keras_parameter_count
from napari_numsnet.models.registry import (
    MODELS,
    SLICE_MODELS,
    ModelSpec,
    create_model,
    get_spec,
    list_models,
    scaled_widths,
)

__all__ = [
    "MODELS",
    "SLICE_MODELS",
    "Carry",
    "ModelSpec",
    "SegmentationOutput",
    "create_model",
    "get_spec",
    "keras_parameter_count",
    "list_models",
    "scaled_widths",
]
