"""What :func:`~napari_numsnet.engine.trainer.fit` checks of a recipe before a run.

Settings that cannot work are refused with a :class:`~napari_numsnet.errors.NumsnetError`
that says what to change; the semi-supervised term, which a preset may switch on, is left
out (with the reason, for the training record) while too few slices are annotated.
"""

from __future__ import annotations

from typing import get_args

from torch import nn

from napari_numsnet.config import StrongViewName, TrainConfig
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models.base import ModelKind

#: The strong views of the semi-supervised term (``TrainConfig.strong_view``).
STRONG_VIEWS: tuple[str, ...] = get_args(StrongViewName)


def takes_semi_supervised(kind: ModelKind, exclusive: bool) -> bool:
    """Whether a model learns from the semi-supervised term: slice models whose classes
    exclude each other (the pseudo-labels are one class a pixel)."""
    return kind is ModelKind.SLICE and exclusive


def checked_recipe(
    config: TrainConfig, annotated: int, unannotated: int
) -> tuple[TrainConfig, str]:
    """Refuse a recipe that cannot run; drop the semi-supervised term where it must wait.

    Parameters
    ----------
    config
        The recipe.
    annotated, unannotated
        Annotated and unannotated slices of the whole run (every stack, every process
        under torchrun).

    Returns
    -------
    tuple[TrainConfig, str]
        The recipe to run, and why the semi-supervised term was left out ("" if not).
    """
    if annotated == 0:
        raise NumsnetError(
            "There is no annotated slice to train on.",
            "Paint at least one slice (or mark an empty slice as done) before training.",
        )
    if config.steps < 0 or config.epochs < 0 or (config.steps == 0 and config.epochs == 0):
        raise NumsnetError(
            f"Nothing to train: steps={config.steps}, epochs={config.epochs}.",
            "Give a positive number of steps (or epochs).",
        )
    for run in (False, True):
        rotation, zoom = config.affine_ranges(run)
        if rotation < 0 or len(zoom) != 2 or not 0 < zoom[0] <= zoom[1]:
            raise NumsnetError(
                f"Invalid augmentation ranges{' for runs' if run else ''}: "
                f"rotation={rotation}, zoom={zoom}.",
                "Use a rotation of 0 or more (radians) and a zoom (low, high) with "
                "0 < low <= high.",
            )
    if not 0.0 <= config.weight_average < 1.0:
        raise NumsnetError(
            f"Weight averaging decay {config.weight_average} is not in [0, 1).",
            "Use 0 (off) or a decay such as 0.998 (an average over about 500 steps).",
        )
    if config.patch_size < 0:
        raise NumsnetError(
            f"Patch size {config.patch_size} is below 0.",
            "Use 0 (whole slices) or the side of the training patches in pixels.",
        )
    if config.run_length < 0:
        raise NumsnetError(
            f"Run length {config.run_length} is below 0.",
            "Use 0 (the batch size) or the number of consecutive slices per run.",
        )
    why = semi_supervised_held_back(config, annotated, unannotated)
    if why:
        return config.replace(semi_supervised=0.0), why
    return config, ""


def semi_supervised_held_back(config: TrainConfig, annotated: int, unannotated: int) -> str:
    """Why a recipe's semi-supervised term is left out of a run, in words ("" where it
    runs or is off): it waits for ``config.semi_supervised_min_slices`` annotated slices
    and needs at least one unannotated slice. The one rule for the trainer and the CLI.

    Parameters
    ----------
    config
        The recipe.
    annotated, unannotated
        Annotated and unannotated slices of the whole run.
    """
    if config.semi_supervised <= 0:
        return ""
    if annotated < config.semi_supervised_min_slices:
        return (
            f"{annotated} annotated slices, fewer than the "
            f"{config.semi_supervised_min_slices} the term waits for"
        )
    if unannotated == 0:
        return "no unannotated slice to learn from"
    return ""


def check_semi_supervised(net: nn.Module, config: TrainConfig) -> None:
    """Refuse the semi-supervised term for a model it cannot apply to, or a strong view
    that does not exist (only where the term is on)."""
    if config.semi_supervised <= 0:
        return
    kind = net.kind
    if not takes_semi_supervised(kind, net.config.exclusive):
        raise NumsnetError(
            f"The semi-supervised term is for slice models with exclusive classes; "
            f"{net.config.name} is a {kind.value} model"
            + ("" if net.config.exclusive else " with independent classes")
            + ".",
            "Set semi_supervised to 0 for this model.",
        )
    if config.strong_view not in STRONG_VIEWS:
        raise NumsnetError(
            f"Unknown strong view {config.strong_view!r}.",
            f"Choose one of: {', '.join(STRONG_VIEWS)}.",
        )


def check_patch(net: nn.Module, config: TrainConfig) -> None:
    """Refuse training patches whose side ``net`` cannot take (only slice and sequence
    models are cut to patches; 3D sub-volumes keep their size)."""
    multiple = int(net.required_multiple)
    patch = config.patch_size
    if patch <= 0 or net.kind is ModelKind.VOLUME or patch % multiple == 0:
        return
    lower = max(multiple, patch // multiple * multiple)
    raise NumsnetError(
        f"Patches of {patch} px do not fit {net.config.name}: its sides must be a "
        f"multiple of {multiple}.",
        f"Use a patch size of {lower} or {lower + multiple} px, or 0 for whole slices.",
    )
