"""``numsnet``: the command line over :mod:`napari_numsnet.pipeline`.

``numsnet demo`` runs the whole few-shot loop on the shipped CT sample; ``train``,
``predict``, ``pseudolabel``, ``evaluate`` and ``models`` expose each step.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import numpy as np

from napari_numsnet import options
from napari_numsnet.commands.common import (
    DefaultsHelpFormatter,
    _batch_note,
    _budget,
    _context_note,
    _machine,
    _parse_slices,
    _parse_values,
    _parse_widths,
    _progress,
    _read_stack,
    _recipe_note,
    _score_table,
    _with_budget,
)
from napari_numsnet.commands.predict import cmd_predict
from napari_numsnet.commands.train import cmd_train
from napari_numsnet.config import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_NOT_HU,
    ClassWeightsName,
    SamplingConfig,
)
from napari_numsnet.errors import NumsnetError
from napari_numsnet.presets import PRESETS, default_preset, get_preset


def cmd_demo(args: argparse.Namespace) -> int:
    from napari_numsnet import pipeline
    from napari_numsnet.engine.device import describe_device, select_device
    from napari_numsnet.io.labels import write_labels
    from napari_numsnet.models import keras_parameter_count

    device = select_device(args.device)
    preset = get_preset(args.preset or default_preset(device.type))
    sample = pipeline.load_sample()
    image, reference, classes = sample.volume.data, sample.labels, sample.classes
    z, h, w = image.shape
    print(f"napari-numsnet demo: the CT sample, {z} slices of {h} x {w} voxels, 3 mm, HU")
    print(f"classes: {', '.join(classes.names[1:])}")
    model_cfg = pipeline.model_for_preset(args.model, classes.num_values, preset)
    if args.widths:
        model_cfg = model_cfg.replace(widths=args.widths)
    if args.context is not None:
        model_cfg = model_cfg.replace(context=args.context)
    training = _with_budget(
        preset.train.replace(device=args.device, seed=args.seed), args.epochs, args.steps
    )
    preprocess = pipeline.default_preprocess(image, preset.preprocess)
    if args.size is not None:
        preprocess = preprocess.replace(size=args.size or None)
    sampling = SamplingConfig(fraction=args.fraction, seed=args.seed)
    split = pipeline.plan_slices(z, sampling)
    print(
        f"annotated ({sampling.strategy}, {sampling.fraction:.0%}): slices "
        f"{', '.join(map(str, split.train))}; validation slice"
        f"{'s' if len(split.val) > 1 else ''} {', '.join(map(str, split.val))}"
    )
    from napari_numsnet.models import create_model

    n_params = keras_parameter_count(create_model(model_cfg))
    size = f"{preprocess.size} px" if preprocess.size else "native size"
    recipe_note = _recipe_note(
        model_cfg.name, training, args.device, len(split.train), z - len(split.train)
    )
    print(
        f"model: {model_cfg.name}{_context_note(model_cfg.context)}, "
        f"widths {model_cfg.widths or 'paper'}, {n_params:,} parameters;"
        f" preset {preset.name}: {_budget(training, len(split.train))}, "
        f"{_batch_note(model_cfg.name, training, len(split.train))}, {size}"
        f"{recipe_note}; "
        f"device: {describe_device(device)}"
    )
    start = time.perf_counter()
    result = pipeline.annotate_train_predict(
        image,
        reference,
        classes,
        model_cfg,
        training,
        preprocess,
        sampling,
        callback=_progress(quiet=args.quiet),
    )
    elapsed = time.perf_counter() - start
    print(
        f"\nDice on the {len(result.unseen)} slices it never saw "
        "(neither trained nor validated on):"
    )
    print(_score_table(result.scores))
    record = result.checkpoint.record
    print(
        f"time: {elapsed:.1f} s in all ({record.get('seconds', 0.0):.1f} s training); "
        f"machine: {_machine()}"
    )
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    pred_path = write_labels(
        out / "ct_sample_prediction.nii.gz", result.prediction.labels, sample.volume.meta
    )
    from napari_numsnet.engine.checkpoint import save_checkpoint
    from napari_numsnet.io.classes import save_class_table

    save_class_table(classes, out / "ct_sample_prediction.classes.json")
    ckpt_path = save_checkpoint(result.checkpoint, out / "ct_sample.numsnet.pt")
    print(f"prediction: {pred_path} (geometry of the input); model: {ckpt_path}")
    return 0


def cmd_pseudolabel(args: argparse.Namespace) -> int:
    from napari_numsnet.io.labels import write_labels
    from napari_numsnet.pseudolabel import KMeansConfig, kmeans_pseudolabels

    options.check_number("--k", args.k, 2, "clusters")
    options.check_output(args.output, [args.image])
    volume = _read_stack(args.image, args.stack_axis)
    result = kmeans_pseudolabels(volume.data, KMeansConfig(k=args.k))
    for note in result.notes:
        print(f"note: {note}")
    path = write_labels(args.output, result.labels, volume.meta)
    counts = np.bincount(result.labels.ravel(), minlength=args.k + 1)
    print(f"pseudo-labels: {path}; voxels per class {counts.tolist()}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from napari_numsnet import pipeline
    from napari_numsnet.io.classes import ClassTable, load_class_table
    from napari_numsnet.io.labels import read_labels
    from napari_numsnet.io.naming import classes_path
    from napari_numsnet.io.volume import read_volume

    reference_volume = read_volume(args.reference, stack_axis=args.stack_axis)
    reference = read_labels(args.reference, like=reference_volume.meta)
    predicted = read_labels(args.prediction, like=reference_volume.meta)
    beside = [
        classes_path(path)
        for path in (args.prediction, args.reference)
        if classes_path(path).is_file()
    ]
    if args.classes:
        classes = load_class_table(args.classes)
    elif beside:  # the table predict (or the plugin) wrote beside the labels
        classes = load_class_table(beside[0])
        print(f"classes: {beside[0]}")
    else:
        classes = ClassTable.default(int(max(reference.max(), predicted.max())) + 1)
    slices = _parse_slices(args.slices)
    options.check_slices("--slices", slices, reference.shape[0], args.reference)
    scores = pipeline.evaluate(predicted, reference, classes, slices)
    print(_score_table(scores))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from napari_numsnet.models import list_models

    rows = list_models(args.in_channels, args.num_classes)
    name_width = max(len("name"), *(len(spec.name) for spec, _ in rows)) + 2
    title_width = max(len("model"), *(len(spec.title) for spec, _ in rows)) + 2
    print(f"{'name':<{name_width}}{'model':<{title_width}}{'parameters':>12}  description")
    for spec, count in rows:
        print(
            f"{spec.name:<{name_width}}{spec.title:<{title_width}}{count:>12,}  {spec.description}"
        )
    print(f"(parameters as Keras counts them, for {args.num_classes} classes)")
    return 0


#: Help of ``--threads`` (demo, train, predict).
THREADS_HELP = (
    "CPU threads (shared by --workers); 0 = the cores other programs leave free, "
    "looked at again between epochs"
)


def _apply_threads(args: argparse.Namespace) -> None:
    """The thread policy for the commands that compute (``--threads``); torchrun's local
    ranks on one machine share the free cores."""
    if not hasattr(args, "threads"):
        return
    import os

    from napari_numsnet.engine.threads import apply_threads

    apply_threads(args.threads, share=int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


CONTEXT_HELP = (
    "2.5D input of the slice models: neighbouring slices on each side given as channels "
    "(default: the preset's)"
)
DEVICE_HELP = "auto (CUDA, then MPS, then CPU) or a torch device such as cpu, cuda:1"
SEED_HELP = "seed of the slice plan, the weights, the batches and the augmentation"
AXIS_HELP = "axis of the file that runs along the stack (default: NIfTI's third, else 0)"


def model_names() -> list[str]:
    """The registry's model names, for ``--model``'s choices."""
    from napari_numsnet.models import list_models

    return [spec.name for spec, _ in list_models()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="numsnet", description="Few-shot segmentation of 3D medical image stacks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    presets = sorted(PRESETS)
    models = model_names()
    fmt = {"formatter_class": DefaultsHelpFormatter}

    p = sub.add_parser("demo", help="the few-shot loop on the shipped CT sample", **fmt)
    p.add_argument("--model", default=DEFAULT_MODEL, choices=models, help="network to train")
    p.add_argument("--preset", choices=presets, help="default: paper on a GPU, fast on CPU")
    p.add_argument("--epochs", type=int, help="train for this many epochs instead of steps")
    p.add_argument("--steps", type=int, help="a fixed step budget instead of the preset's")
    p.add_argument("--fraction", type=float, default=0.10, help="share of the slices annotated")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("--output", default="numsnet-demo", help="folder for the results")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--size", type=int, help="slice side for the network (0 = native)")
    p.add_argument("--widths", type=_parse_widths, help=argparse.SUPPRESS)
    p.add_argument("--context", type=int, help=CONTEXT_HELP)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train on the annotated slices of a stack", **fmt)
    p.add_argument("--image", required=True, nargs="+", help=".nii/.nii.gz/.tif/.npy stack(s)")
    p.add_argument("--labels", required=True, nargs="+", help="label stack(s), same geometry")
    p.add_argument("--annotated", help="annotated slices, e.g. '3,7,10-12' (default: labelled)")
    p.add_argument("--val", help="annotated slices held out for validation")
    p.add_argument("--classes", help="class table JSON (names and colours)")
    p.add_argument("--num-classes", type=int, help="label values incl. background")
    p.add_argument(
        "--model",
        choices=models,
        help=f"network to train (default {DEFAULT_MODEL} for CT in Hounsfield units, "
        f"{DEFAULT_MODEL_NOT_HU} for other images)",
    )
    p.add_argument(
        "--preset",
        choices=presets,
        help="default: paper on a GPU, fast elsewhere; a resumed run keeps its own",
    )
    p.add_argument("--epochs", type=int, help="train for this many epochs instead of steps")
    p.add_argument("--steps", type=int, help="a fixed step budget instead of the preset's")
    p.add_argument("--batch-size", type=int, help="slices per batch (default: the preset's)")
    p.add_argument("--learning-rate", type=float, help="peak learning rate (default: preset's)")
    p.add_argument(
        "--patch-size",
        type=int,
        help="train on random square patches of this side, px (0 = whole slices, the default)",
    )
    p.add_argument(
        "--class-weights",
        choices=get_args(ClassWeightsName),
        help="weigh the cross-entropy by how rare each class is ('frequency'; the presets: "
        "'none'); for the dice_ce and ce losses with exclusive classes",
    )
    p.add_argument(
        "--semi-supervised",
        type=float,
        help="weight of the semi-supervised term on the unannotated slices, 0 = off "
        "(default: the preset's; slice models with exclusive classes only)",
    )
    p.add_argument("--size", type=int, help="slice side for the network (0 = native)")
    p.add_argument("--resume", help="checkpoint to continue training")
    p.add_argument("--transfer", help="checkpoint to reuse all layers but the head")
    p.add_argument(
        "--cascade",
        metavar="REGION_MODEL",
        help="CHS-Net cascade: this model segments the region, --model the classes inside it",
    )
    p.add_argument("--region-values", help="label values forming the region (default: all)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("--stack-axis", type=int, help=AXIS_HELP)
    p.add_argument("--output", required=True, help="checkpoint to write (*.numsnet.pt)")
    p.add_argument("--widths", type=_parse_widths, help=argparse.SUPPRESS)
    p.add_argument("--context", type=int, help=CONTEXT_HELP)
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="segment a stack, a folder or a list of stacks", **fmt)
    p.add_argument("--checkpoint", required=True, help="*.numsnet.pt (or a cascade)")
    p.add_argument("--input", nargs="+", help="files or folders")
    p.add_argument("--input-list", help="text file with one stack path per line")
    p.add_argument("--output", required=True, help="file (one input) or folder")
    p.add_argument("--workers", type=int, help="processes (default: one per GPU, else one on CPU)")
    p.add_argument(
        "--direction",
        choices=["forward", "backward", "both"],
        help="order of travel along the stack (NUMSnet family; default: the checkpoint's, "
        "both for a model trained on runs in both orders, else forward)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="slices per forward pass")
    p.add_argument(
        "--largest-component",
        type=_parse_values,
        help="label values (e.g. '1,3') each reduced to its largest 3D connected component, "
        "or 'none' (default: the classes for which that raised the validation Dice "
        "when the model was trained)",
    )
    p.add_argument("--probabilities", action="store_true", help="also write probabilities")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--stack-axis", type=int, help=AXIS_HELP)
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("pseudolabel", help="k-means pseudo-labels of a CT stack", **fmt)
    p.add_argument("--image", required=True, help="the stack to label")
    p.add_argument("--output", required=True, help="label file to write (a new file)")
    p.add_argument("--k", type=int, default=3, help="k-means clusters (classes)")
    p.add_argument("--stack-axis", type=int, help=AXIS_HELP)
    p.set_defaults(func=cmd_pseudolabel)

    p = sub.add_parser("evaluate", help="Dice, IoU, precision, recall per class", **fmt)
    p.add_argument("--prediction", required=True, help="predicted label file")
    p.add_argument("--reference", required=True, help="reference label file")
    p.add_argument(
        "--classes",
        help="class table JSON (default: <stem>.classes.json beside the prediction or the "
        "reference, as predict writes it)",
    )
    p.add_argument("--slices", help="only these slices, e.g. '0-9,20'")
    p.add_argument("--stack-axis", type=int, help=AXIS_HELP)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="list the models with their parameter counts", **fmt)
    p.add_argument("--num-classes", type=int, default=3, help="output channels")
    p.add_argument("--in-channels", type=int, default=1, help="input channels")
    p.set_defaults(func=cmd_models)

    from napari_numsnet.commands import suggest

    suggest.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``numsnet`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        _apply_threads(args)
        return int(args.func(args))
    except NumsnetError as exc:
        print(f"numsnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"numsnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
