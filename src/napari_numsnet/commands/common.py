"""Helpers shared by the command-line commands: progress, budgets, argument parsing."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from napari_numsnet.config import (
    step_budget,
)
from napari_numsnet.errors import NumsnetError


def _budget(training, annotated: int) -> str:
    """The run's budget in words: ``450 steps (150 a slice, 400..6000)`` or ``60 epochs``."""
    if training.steps > 0 and training.steps_per_slice > 0:
        steps = step_budget(training, annotated, 0)
        return (
            f"{steps} steps ({training.steps_per_slice} a slice, "
            f"{training.min_steps}..{training.steps})"
        )
    if training.steps > 0:
        return f"{training.steps} steps"
    return f"{training.epochs} epochs"


def _batch_note(model_name: str, training, annotated: int) -> str:
    """``batch N`` (clamped to the annotation), or ``runs of N slices`` for the NUMSnet
    family, whose batches are runs of consecutive slices."""
    from napari_numsnet.models import get_spec
    from napari_numsnet.models.base import ModelKind

    if get_spec(model_name).kind is ModelKind.SEQUENCE:
        both = ", in both orders" if training.runs_reversed else ""
        return f"runs of {training.run_length or training.batch_size} slices{both}"
    return f"batch {min(training.batch_size, max(annotated, 1))}"


def _recipe_note(
    model_name: str,
    training,
    device: str,
    annotated: int,
    unannotated: int,
    exclusive: bool = True,
) -> str:
    """What the recipe adds beyond the budget and batch, in words: the semi-supervised term
    (``, semi-supervised (unimatch) on the unannotated slices``, why it waits, or that this
    model trains without it; the trainer's rule, ``semi_supervised_held_back``), class
    weights when asked for, and bfloat16 where this CPU computes it."""
    from napari_numsnet.engine.device import select_device, training_dtype
    from napari_numsnet.engine.recipe import semi_supervised_held_back, takes_semi_supervised
    from napari_numsnet.models import get_spec

    notes = []
    kind = get_spec(model_name).kind
    if training.semi_supervised > 0:
        held_back = semi_supervised_held_back(training, annotated, unannotated)
        if not takes_semi_supervised(kind, exclusive):
            notes.append("no semi-supervised term for this model")
        elif held_back:
            notes.append(f"no semi-supervised term yet ({held_back})")
        else:
            notes.append(f"semi-supervised ({training.strong_view}) on the unannotated slices")
    if training.class_weights != "none":
        notes.append(f"classes weighted by {training.class_weights}")
    chosen = select_device(device)
    if chosen.type == "cpu" and training_dtype(chosen, kind, False, training.cpu_bf16):
        notes.append("bfloat16 on this CPU")
    return "".join(f", {note}" for note in notes)


def _context_note(context: int) -> str:
    """`` with 2.5D context of N slices`` for a model that takes it, else nothing."""
    if not context:
        return ""
    return f" with 2.5D context ({context} slice{'s' if context > 1 else ''} each side)"


def _with_budget(training, epochs: int | None, steps: int | None):
    """``--epochs`` (an epoch count) or ``--steps`` (a fixed budget) override the preset's."""
    if epochs is not None and steps is not None:
        raise NumsnetError(
            "Both --epochs and --steps were given.", "Give one budget: --steps or --epochs."
        )
    if epochs is not None:
        return training.replace(epochs=epochs, steps=0, steps_per_slice=0)
    if steps is not None:
        return training.replace(steps=steps, steps_per_slice=0)
    return training


def _progress(validations: int = 25, quiet: bool = False):
    """A TrainEvent callback: a tqdm bar in a terminal, else about ten validation lines."""
    from tqdm import tqdm

    bar = None
    every = max(1, validations // 10)  # fit() validates at most 25 times a run

    def callback(event) -> None:
        nonlocal bar
        if quiet:
            return
        if event.kind == "start":
            print(event.message, flush=True)
            if sys.stdout.isatty():
                bar = tqdm(total=event.total_steps, unit="step", desc="training")
        elif event.kind == "step" and bar is not None:
            bar.update(1)
            bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.3f}", refresh=False)
        elif event.kind == "epoch":
            dice = np.mean(list(event.val_dice.values())) if event.val_dice else float("nan")
            if bar is not None:
                bar.set_postfix(
                    epoch=event.epoch, loss=f"{event.loss:.3f}", val_dice=f"{dice:.3f}"
                )
            elif event.epoch % every == 0 or event.epoch == 1:
                print(
                    f"  step {event.step:>5}  loss {event.loss:.4f}  val Dice {dice:.3f}  "
                    f"{event.slices_per_second:.1f} slices/s",
                    flush=True,
                )
        elif event.kind == "end":
            if bar is not None:
                bar.close()
            print(f"training {event.message} after {event.step} steps", flush=True)

    return callback


def _score_table(scores: dict[str, dict[str, float]]) -> str:
    lines = [f"  {'class':<14}{'Dice':>8}{'IoU':>8}{'Prec.':>8}{'Recall':>8}"]
    for name, m in scores.items():
        cells = "".join(f"{m[k]:>8.3f}" for k in ("dice", "iou", "precision", "recall"))
        lines.append(f"  {name:<14}{cells}")
    present = [m for m in scores.values() if not np.isnan(m["dice"])]
    if present:
        cells = "".join(
            f"{np.mean([m[k] for m in present]):>8.3f}"
            for k in ("dice", "iou", "precision", "recall")
        )
        lines.append(f"  {'mean':<14}{cells}")
    return "\n".join(lines)


def _machine() -> str:
    import platform

    import torch

    return (
        f"{platform.system()} {platform.machine()}, {torch.get_num_threads()} CPU threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def _read_stack(path: str, stack_axis: int | None):
    from napari_numsnet.io.volume import read_volume

    return read_volume(path, stack_axis=stack_axis)


def _parse_slices(text: str | None) -> list[int] | None:
    if not text:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise NumsnetError(
            f"Cannot read the slice list {text!r}.",
            "Give slice numbers and ranges separated by commas, e.g. '3,7,10-12'.",
        ) from None
    return out


def _parse_values(text: str) -> tuple[int, ...]:
    """``'1,3'`` -> ``(1, 3)``: label values; ``'none'`` -> ``()``."""
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of label values, e.g. '1,3', or 'none'"
        ) from None


def _parse_widths(text: str) -> tuple[int, ...]:
    """``'4,8,8,8,8'`` -> ``(4, 8, 8, 8, 8)``: filters per depth (advanced, for tests)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help texts that end with the default, where there is one to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = not (default is None or default is False or default is argparse.SUPPRESS)
        if shown and "%(default)" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text
