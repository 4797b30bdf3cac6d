"""What every registry model declares about itself: the model contract.

A registry model is an ``nn.Module`` that also inherits :class:`ModelContract` and
declares, as class attributes (or instance attributes set in ``__init__``):

``kind``
    A :class:`ModelKind`: which batch source trains it and which predictor runs it.
``required_multiple``
    The in-plane sides (H, W, pixels) must be multiples of this.
``required_depth``
    Volume models only: the sub-volume depth D (slices) must be a multiple of this
    (1 for slice and sequence models).
``head_names``
    Names of the sub-modules whose shapes depend on the number of classes (the output
    heads). Transfer learning re-initialises exactly these; see :meth:`head_modules`.
``inference_heads``
    The heads one may keep at inference (:meth:`set_inference_head`); empty for a
    model with a single output.

Its ``forward(x, carry=None)`` returns a
:class:`~napari_numsnet.models.blocks.SegmentationOutput` and starts with
:func:`check_input`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from torch import Tensor


class ModelKind(str, Enum):
    """How a model sees a stack, which chooses its batch source and its predictor.

    ``SLICE``: one slice at a time, in any order. ``SEQUENCE``: ordered slices with
    features carried from slice to slice (the NUMSnet family). ``VOLUME``: 3D
    sub-volumes of consecutive slices.
    """

    SLICE = "slice"
    SEQUENCE = "sequence"
    VOLUME = "volume"


class ModelContract:
    """Mixin with the declarations every registry model makes (see the module notes).

    Attributes
    ----------
    kind
        The model's :class:`ModelKind`.
    required_multiple
        In-plane sides must be multiples of this (pixels).
    required_depth
        Sub-volume depth must be a multiple of this (slices; 1 unless ``VOLUME``).
    head_names
        Attribute names of the class-count-dependent output modules.
    inference_heads
        Heads that :meth:`set_inference_head` accepts (``1..n``), empty if none.
    inference_head
        The kept head, or ``None`` for the full output (all heads, averaged where the
        model averages them). Only used in eval mode; training always runs every head.
    """

    kind: ModelKind = ModelKind.SLICE
    required_multiple: int = 16
    required_depth: int = 1
    head_names: tuple[str, ...] = ("head",)
    inference_heads: tuple[int, ...] = ()
    inference_head: int | None = None

    def head_modules(self) -> tuple[str, ...]:
        """Prefixes (module names) of the parameters that depend on the class count."""
        return self.head_names

    def is_head_parameter(self, key: str) -> bool:
        """Whether state-dict entry ``key`` belongs to one of :meth:`head_modules`."""
        return any(key == name or key.startswith(name + ".") for name in self.head_modules())

    def set_inference_head(self, head: int | None) -> None:
        """Keep only output head ``head`` at inference (``None``: the full output).

        Raises
        ------
        ValueError
            ``head`` is not one of :attr:`inference_heads`.
        """
        if head is not None and head not in self.inference_heads:
            choices = ", ".join(map(str, self.inference_heads)) or "none"
            raise ValueError(
                f"{type(self).__name__} has no inference head {head}; heads: {choices}."
            )
        self.inference_head = head


def padded_size(model: ModelContract, shape: Sequence[int]) -> tuple[int, ...]:
    """The input size ``model`` accepts that is closest to ``shape`` from above.

    Parameters
    ----------
    model
        A registry model.
    shape
        ``(H, W)`` for slice/sequence models, ``(D, H, W)`` (or any prefix before the
        last three) for volume models; sizes in slices and pixels.

    Returns
    -------
    tuple of int
        ``shape`` with H and W rounded up to ``required_multiple`` and, for volume
        models, D rounded up to ``required_depth``.
    """
    sizes = [int(s) for s in shape]

    def up(size: int, multiple: int) -> int:
        return -(-size // multiple) * multiple

    sizes[-1] = up(sizes[-1], model.required_multiple)
    sizes[-2] = up(sizes[-2], model.required_multiple)
    if model.kind is ModelKind.VOLUME and len(sizes) >= 3:
        sizes[-3] = up(sizes[-3], model.required_depth)
    return tuple(sizes)


def check_input(model: ModelContract, x: Tensor) -> None:
    """Refuse an input whose size ``model`` cannot take, saying what to pad to.

    Parameters
    ----------
    model
        A registry model.
    x
        ``(B, C, H, W)`` (slice, sequence) or ``(B, C, D, H, W)`` (volume).

    Raises
    ------
    ValueError
        A side is not a multiple of the model's rule; the message names the padded size.
    """
    volume = model.kind is ModelKind.VOLUME
    shape = tuple(int(s) for s in (x.shape[-3:] if volume else x.shape[-2:]))
    target = padded_size(model, shape)
    if target != shape:
        what = "sub-volume" if volume else "slice"
        depth = f", depth a multiple of {model.required_depth}" if volume else ""
        raise ValueError(
            f"{what} size {shape} does not fit {type(model).__name__}: sides must be a "
            f"multiple of {model.required_multiple}{depth}; pad it to {target} before "
            "calling the model."
        )
