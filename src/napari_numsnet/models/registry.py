"""One registry: every model is built by name from a ``ModelConfig``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from napari_numsnet.config import ModelConfig
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models.base import ModelKind
from napari_numsnet.models.blocks import keras_parameter_count
from napari_numsnet.models.drsegunet import DRSegUNet
from napari_numsnet.models.msdsunet import MSDSUNet3d
from napari_numsnet.models.nested import NESTED_NODES, UNET_NODES, UNETPP_NODES, NestedUNet
from napari_numsnet.models.raiunet import RAIUNet
from napari_numsnet.models.unetsharp import UNetSharp

UNET_WIDTHS = (32, 64, 128, 256, 512)
WIDE_WIDTHS = (35, 70, 140, 280, 560)
DRSEG_WIDTHS = (16, 32, 64, 128, 256)
# CHS-Net gives no widths; these give 4.3M parameters, the paper's "4.2M" per RAIU-Net.
RAIU_WIDTHS = (20, 40, 80, 160, 320)


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: what the model is and how to build it."""

    name: str
    title: str
    description: str
    default_widths: tuple[int, ...]
    build: Callable[[ModelConfig, tuple[int, ...]], nn.Module]
    kind: ModelKind = ModelKind.SLICE


def _nested(decoder, fused=frozenset(), bottom_batchnorm=False):
    def build(cfg: ModelConfig, widths: tuple[int, ...]) -> nn.Module:
        return NestedUNet(
            cfg.input_channels,
            cfg.num_classes,
            widths,
            decoder_nodes=decoder,
            fused_nodes=fused,
            bottom_batchnorm=bottom_batchnorm,
            dropout=cfg.dropout,
            deep_supervision=cfg.deep_supervision and decoder is not UNET_NODES,
        )

    return build


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "unet",
            "UNet",
            "U-Net, depth 5 (the NUMSnet paper's baseline)",
            UNET_WIDTHS,
            _nested(UNET_NODES, bottom_batchnorm=True),
        ),
        ModelSpec(
            "wunet",
            "wUNet",
            "wide U-Net, widths 35..560",
            WIDE_WIDTHS,
            _nested(UNET_NODES, bottom_batchnorm=True),
        ),
        ModelSpec(
            "unetpp",
            "UNet++",
            "nested U-Net with dense skips (optional deep supervision)",
            UNET_WIDTHS,
            _nested(UNETPP_NODES),
        ),
        ModelSpec(
            "numsnet",
            "NUMSnet",
            "UNet++ whose six nested nodes are carried slice to slice",
            WIDE_WIDTHS,
            _nested(UNETPP_NODES, NESTED_NODES),
            ModelKind.SEQUENCE,
        ),
        ModelSpec(
            "nums_all",
            "NUMS-all",
            "NUMSnet carrying all ten up-sampling nodes",
            WIDE_WIDTHS,
            _nested(UNETPP_NODES, UNETPP_NODES),
            ModelKind.SEQUENCE,
        ),
        ModelSpec(
            "drsegunet",
            "DRSegUNet",
            "deep residual U-Net of the DRSegUNet thesis",
            DRSEG_WIDTHS,
            lambda cfg, w: DRSegUNet(cfg.input_channels, cfg.num_classes, w),
        ),
        ModelSpec(
            "unetsharp",
            "UNet#",
            "UNet-sharp: dense + full-scale skips, 8 heads, pruning, classification guide",
            UNET_WIDTHS,
            lambda cfg, w: UNetSharp(cfg.input_channels, cfg.num_classes, w, cfg.exclusive),
        ),
        ModelSpec(
            "raiunet",
            "RAIU-Net",
            "CHS-Net's residual attention inception U-Net (spectral pooling, SSD attention)",
            RAIU_WIDTHS,
            lambda cfg, w: RAIUNet(cfg.input_channels, cfg.num_classes, w),
        ),
        ModelSpec(
            "msdsunet",
            "MSDS-UNet",
            "3D residual U-Net with two-pathway deep supervision (sub-volumes)",
            DRSEG_WIDTHS,
            lambda cfg, w: MSDSUNet3d(cfg.input_channels, cfg.num_classes, w),
            ModelKind.VOLUME,
        ),
    )
}


#: The models that see one slice at a time (``ModelKind.SLICE``): those that take 2.5D
#: context. The registry tests check each entry's kind against its model's own.
SLICE_MODELS = tuple(name for name, spec in MODELS.items() if spec.kind is ModelKind.SLICE)


def get_spec(name: str) -> ModelSpec:
    """Return the registry entry for ``name`` (case and '-', '+' tolerant)."""
    key = name.lower().replace("-", "_").replace("++", "pp").replace("+", "p")
    key = key.replace("#", "sharp")
    if key not in MODELS:
        raise NumsnetError(f"Unknown model {name!r}.", f"Choose one of: {', '.join(MODELS)}.")
    return MODELS[key]


def scaled_widths(name: str, scale: float) -> tuple[int, ...] | None:
    """The paper's widths of model ``name`` times ``scale`` (at least 2 filters each);
    ``None`` (the paper's widths) for a scale of 1."""
    if scale == 1.0:
        return None
    return tuple(max(2, round(w * scale)) for w in get_spec(name).default_widths)


def create_model(config: ModelConfig) -> nn.Module:
    """Build the network described by ``config``.

    The returned module has ``config`` (the :class:`ModelConfig`, widths filled in)
    attribute and the declarations of :class:`~napari_numsnet.models.base.ModelContract`
    (``kind``, ``head_modules()``, the size rule, the inference head); its
    ``forward(x, carry=None)`` returns a
    :class:`~napari_numsnet.models.blocks.SegmentationOutput`.
    """
    spec = get_spec(config.name)
    widths = tuple(config.widths) if config.widths is not None else spec.default_widths
    if len(widths) != len(spec.default_widths) or min(widths) < 1:
        raise NumsnetError(
            f"Model {spec.name} needs {len(spec.default_widths)} positive widths; got {widths}.",
            f"Give one width per depth, e.g. {spec.default_widths}.",
        )
    if config.num_classes < 1 or config.in_channels < 1:
        raise NumsnetError(
            f"num_classes={config.num_classes} and in_channels={config.in_channels} must be >= 1.",
            "Count the background as a class for exclusive labels (background + organs).",
        )
    if config.context < 0:
        raise NumsnetError(
            f"Context {config.context} is below 0.",
            "Use 0 (the slice alone) or the number of neighbouring slices on each side.",
        )
    if config.context and spec.kind is not ModelKind.SLICE:
        raise NumsnetError(
            f"{spec.title} is a {spec.kind.value} model: it already sees the neighbouring "
            "slices, and 2.5D context is for slice models only.",
            f"Set the context to 0 for {spec.title}, or choose a slice model "
            f"({', '.join(SLICE_MODELS)}).",
        )
    model = spec.build(config, widths)
    model.config = config.replace(name=spec.name, widths=widths)  # type: ignore[assignment]
    return model


def list_models(
    in_channels: int = 1, num_classes: int = 3, width_scale: float = 1.0
) -> list[tuple[ModelSpec, int]]:
    """Every registry entry with its Keras-style parameter count at the paper's widths
    times ``width_scale`` (:func:`scaled_widths`)."""
    rows = []
    for spec in MODELS.values():
        widths = scaled_widths(spec.name, width_scale)
        config = ModelConfig(spec.name, in_channels, num_classes, widths=widths)
        rows.append((spec, keras_parameter_count(create_model(config))))
    return rows
