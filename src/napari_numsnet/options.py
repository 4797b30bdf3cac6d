"""Checks of the command line's options before any work is spent.

Every option either takes effect or is refused: numbers outside their meaning (zero,
negative, not finite), slices outside the stack, options that contradict each other,
and outputs that are inputs or cannot be written are refused with a message that names
the option and says what to do.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.atomic import check_writable_target
from napari_numsnet.io.paths import check_not_input

#: More label values than this is not a class count but a mistake (e.g. an image).
MAX_CLASSES = 256


def check_number(
    option: str, value: float | None, minimum: float, meaning: str, integer: bool = True
) -> None:
    """Refuse ``value`` below ``minimum`` or not finite (``None`` means not given)."""
    if value is None:
        return
    if not math.isfinite(value) or value < minimum:
        kind = "a whole number" if integer else "a number"
        raise NumsnetError(
            f"{option} {value} is outside its meaning ({meaning}).",
            f"Give {option} {kind} of at least {minimum:g}.",
        )


def check_slices(
    option: str, slices: Sequence[int] | None, depth: int, name: str = "the stack"
) -> None:
    """Refuse slice numbers outside ``0..depth-1``."""
    bad = sorted({s for s in slices or () if not 0 <= s < depth})
    if bad:
        raise NumsnetError(
            f"{option} names slice(s) {', '.join(map(str, bad[:5]))} but {name} has "
            f"{depth} slices (0..{depth - 1}).",
            f"Give {option} slices between 0 and {depth - 1}.",
        )


def check_label_values(option: str, values: Sequence[int], class_names: Sequence[str]) -> None:
    """Refuse label values that are not a foreground class of the model."""
    bad = [v for v in values if not 1 <= v < len(class_names)]
    if bad:
        listing = ", ".join(f"{i} {name}" for i, name in enumerate(class_names) if i)
        raise NumsnetError(
            f"{option} {', '.join(map(str, bad))}: not a class of this model.",
            f"Give label values among its classes: {listing}.",
        )


def check_val_within(annotated: Sequence[int] | None, val: Sequence[int] | None) -> None:
    """``--val`` must hold out slices of ``--annotated``, and not all of them."""
    if not val or annotated is None:
        return
    outside = sorted(set(val) - set(annotated))
    if outside:
        raise NumsnetError(
            f"--val slice(s) {', '.join(map(str, outside[:5]))} are not among --annotated.",
            "Hold out annotated slices only: list them in --annotated too.",
        )
    if set(annotated) <= set(val):
        raise NumsnetError(
            "--val holds out every --annotated slice: none is left to train on.",
            "Hold out fewer slices for validation, or annotate more.",
        )


def check_not_background(labels: np.ndarray, annotated: Sequence[int] | None, name: str) -> None:
    """Refuse annotated slices that are all background: the model would learn nothing.

    Parameters
    ----------
    labels
        ``(Z, H, W)`` label stack.
    annotated
        The annotated slices (``None``: the labelled ones, never all background).
    name
        The label file, for the message.
    """
    if not annotated:
        return
    inside = [s for s in annotated if 0 <= s < labels.shape[0]]
    if inside and not np.any(labels[inside]):
        raise NumsnetError(
            f"The annotated slices {', '.join(map(str, inside[:8]))} of {name} are all "
            "background (0): a model trained on them predicts nothing.",
            "Paint the structures on those slices, or check that --labels is the right file.",
        )


def check_class_count(num_values: int, source: str) -> None:
    """Refuse an absurd number of label values (from ``--num-classes`` or the labels)."""
    if num_values > MAX_CLASSES:
        raise NumsnetError(
            f"{source} imply {num_values} label values, more than the {MAX_CLASSES} a "
            "segmentation can sensibly have.",
            "Check that the label file holds class numbers (0, 1, 2, ...), not an image, "
            "or give --classes / --num-classes.",
        )


def check_output(output: str | Path, inputs: Iterable[str | Path | None]) -> Path:
    """The output is none of the inputs and can be written (checked before any work)."""
    check_not_input(output, inputs)
    return check_writable_target(output)


def check_train_options(args: argparse.Namespace) -> None:
    """Refuse ``numsnet train`` options that would be ignored or are out of range."""
    check_number("--epochs", args.epochs, 1, "an untrained checkpoint is no result")
    check_number(
        "--steps", getattr(args, "steps", None), 1, "an untrained checkpoint is no result"
    )
    check_number("--batch-size", args.batch_size, 1, "slices per step")
    check_number(
        "--patch-size", getattr(args, "patch_size", None), 0, "patch side in pixels, 0 = whole"
    )
    lr = args.learning_rate
    if lr is not None and (not math.isfinite(lr) or lr <= 0):
        raise NumsnetError(
            f"--learning-rate {lr} is outside its meaning (a step size above 0).",
            "Give a positive learning rate such as 0.001.",
        )
    check_number(
        "--semi-supervised",
        getattr(args, "semi_supervised", None),
        0,
        "the term's loss weight, 0 = off",
        integer=False,
    )
    check_number("--size", args.size, 0, "slice side in pixels, 0 = native")
    check_number("--num-classes", args.num_classes, 2, "label values incl. background")
    if args.num_classes is not None:
        check_class_count(args.num_classes, "--num-classes")
    if args.resume and args.transfer:
        raise NumsnetError(
            "--transfer and --resume both name a checkpoint; only one can be the start.",
            "Use --resume to continue a run, or --transfer to reuse a model for new classes.",
        )
    fixed_by_checkpoint = {  # option: (what the checkpoint fixes, what to do instead)
        "model": ("the model", f"train a new {getattr(args, 'model', None)}"),
        "widths": ("the network's widths", "train a new model with these widths"),
        "context": ("the network's 2.5D context", "train a new model with this context"),
    }
    for key, (what, instead) in fixed_by_checkpoint.items():
        value = getattr(args, key, None)
        if value is not None and (args.resume or args.transfer):
            which = "--resume" if args.resume else "--transfer"
            option = f"--{key}" if key == "widths" else f"--{key} {value}"
            raise NumsnetError(
                f"{option} is ignored beside {which}: the checkpoint fixes {what}.",
                f"Leave out --{key}, or {instead} without {which}.",
            )
    from napari_numsnet.engine.run_saver import resume_path

    resume = resume_path(args.resume, args.output) if args.resume else None
    inputs = [*args.image, *args.labels, resume, args.transfer, args.classes]
    check_output(args.output, inputs)


def check_predict_options(args: argparse.Namespace, inputs: Sequence[str | Path]) -> None:
    """Refuse ``numsnet predict`` numbers out of range and outputs that are inputs."""
    check_number("--workers", args.workers, 1, "processes")
    check_number("--batch-size", args.batch_size, 1, "slices per step")
    check_number(
        "--patch-size", getattr(args, "patch_size", None), 0, "patch side in pixels, 0 = whole"
    )
    check_not_input(args.output, [*inputs, args.checkpoint, args.input_list])
