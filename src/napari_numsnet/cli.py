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

import numpy as np

from napari_numsnet import options
from napari_numsnet.config import (
    DEFAULT_MODEL,
    PRESETS,
    PredictConfig,
    SamplingConfig,
    get_preset,
    step_budget,
)
from napari_numsnet.errors import NumsnetError


def _budget(training, annotated: int) -> str:
    """The run's budget in words: ``450 steps (150 a slice, 400..4000)`` or ``60 epochs``."""
    if training.steps > 0 and training.steps_per_slice > 0:
        steps = step_budget(training, annotated, 0)
        return (
            f"{steps} steps ({training.steps_per_slice} a slice, "
            f"{training.min_steps}..{training.steps})"
        )
    if training.steps > 0:
        return f"{training.steps} steps"
    return f"{training.epochs} epochs"


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


def cmd_demo(args: argparse.Namespace) -> int:
    from napari_numsnet import pipeline
    from napari_numsnet.engine.device import describe_device, select_device
    from napari_numsnet.io.labels import write_labels
    from napari_numsnet.models import keras_parameter_count

    device = select_device(args.device)
    preset = get_preset(args.preset or ("paper" if device.type == "cuda" else "fast"))
    sample = pipeline.load_sample()
    image, reference, classes = sample.volume.data, sample.labels, sample.classes
    z, h, w = image.shape
    print(f"napari-numsnet demo: the CT sample, {z} slices of {h} x {w} voxels, 3 mm, HU")
    print(f"classes: {', '.join(classes.names[1:])}")
    model_cfg = pipeline.model_for_preset(args.model, classes.num_values, preset)
    if args.widths:
        model_cfg = model_cfg.replace(widths=args.widths)
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
        f"{', '.join(map(str, split.train))}; validation: {', '.join(map(str, split.val))}"
    )
    from napari_numsnet.models import create_model

    n_params = keras_parameter_count(create_model(model_cfg))
    size = f"{preprocess.size} px" if preprocess.size else "native size"
    print(
        f"model: {model_cfg.name}, widths {model_cfg.widths or 'paper'}, {n_params:,} parameters;"
        f" preset {preset.name}: {_budget(training, len(split.train))}, batch "
        f"{min(training.batch_size, len(split.train))}, {size}; device: {describe_device(device)}"
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


def _parse_widths(text: str) -> tuple[int, ...]:
    """``'4,8,8,8,8'`` -> ``(4, 8, 8, 8, 8)``: filters per depth (advanced, for tests)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None


def cmd_train(args: argparse.Namespace) -> int:
    """Train on one or more stacks; under torchrun, one process per GPU (or CPU share)."""
    from napari_numsnet.engine import distributed

    context = distributed.init_from_env(device=args.device)
    try:
        return _train(args, context)
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace, context) -> int:
    from napari_numsnet import pipeline
    from napari_numsnet.engine import distributed
    from napari_numsnet.engine.checkpoint import load_checkpoint, save_checkpoint
    from napari_numsnet.engine.run_saver import periodic_saver, resume_path
    from napari_numsnet.io.classes import ClassTable, load_class_table
    from napari_numsnet.io.labels import read_labels

    if len(args.image) != len(args.labels):
        raise NumsnetError(
            f"{len(args.image)} image(s) but {len(args.labels)} label file(s).",
            "Give one label file per image, in the same order.",
        )
    if len(args.image) > 1 and (args.annotated or args.val):
        raise NumsnetError(
            "--annotated and --val name slices of one stack, but several stacks are given.",
            "Leave them out: every labelled slice of each stack counts as annotated.",
        )
    options.check_train_options(args)  # before any work: numbers, conflicts, the output
    volumes = [_read_stack(path, args.stack_axis) for path in args.image]
    labels = [read_labels(path, like=v.meta) for path, v in zip(args.labels, volumes, strict=True)]
    annotated, val = _parse_slices(args.annotated), _parse_slices(args.val)
    options.check_slices("--annotated", annotated, volumes[0].data.shape[0], args.image[0])
    options.check_slices("--val", val, volumes[0].data.shape[0], args.image[0])
    options.check_val_within(annotated, val)
    for lab, path in zip(labels, args.labels, strict=True):
        options.check_not_background(lab, annotated, path)
    preset = get_preset(args.preset)
    resume = load_checkpoint(resume_path(args.resume, args.output)) if args.resume else None
    transfer = load_checkpoint(args.transfer) if args.transfer else None
    if args.classes:
        classes = load_class_table(args.classes)
    elif resume is not None and not args.num_classes:
        # Continue with the checkpoint's classes, even if this annotation lacks some.
        classes = ClassTable.from_names(resume.class_names)
    else:
        values = args.num_classes or max(int(lab.max()) for lab in labels) + 1
        options.check_class_count(values, f"The labels (largest value {values - 1})")
        classes = ClassTable.default(max(values, 2))
    model_name = args.model or DEFAULT_MODEL
    model_cfg = pipeline.model_for_preset(model_name, classes.num_values, preset)
    if args.widths:
        model_cfg = model_cfg.replace(widths=args.widths)
    device = str(context.device) if context else args.device
    training = preset.train.replace(device=device, seed=args.seed)
    training = _with_budget(training, args.epochs, args.steps)
    for key in ("batch_size", "learning_rate"):
        if getattr(args, key) is not None:
            training = training.replace(**{key: getattr(args, key)})
    preprocess = pipeline.default_preprocess(volumes[0].data, preset.preprocess)
    if args.size is not None:
        preprocess = preprocess.replace(size=args.size or None)
    stacks = [
        pipeline.AnnotatedStack(
            volume.data,
            lab,
            _parse_slices(args.annotated),
            _parse_slices(args.val) or (),
            name=Path(path).name,
        )
        for volume, lab, path in zip(volumes, labels, args.image, strict=True)
    ]
    if args.cascade:
        return _train_cascade(args, stacks, model_cfg, training, preprocess, classes, preset)
    main_process = context is None or context.is_main
    checkpoint = pipeline.train(
        stacks,
        model_cfg,
        training,
        preprocess,
        classes,
        resume=resume,
        transfer_from=transfer,
        callback=_progress(quiet=not main_process),
        on_checkpoint=periodic_saver(
            args.output, resume.preprocess if resume else preprocess, classes.names, training
        ),
    )
    if main_process:  # one writer: rank 0
        path = save_checkpoint(checkpoint, args.output)
        last = checkpoint.record["epochs"][-1] if checkpoint.record.get("epochs") else {}
        print(
            f"checkpoint: {path} ({checkpoint.epochs_done} epochs, last loss {last.get('loss')})"
        )
        if last.get("val_dice"):
            dice = ", ".join(f"{k} {v:.3f}" for k, v in last["val_dice"].items())
            print(f"validation Dice: {dice}")
    distributed.barrier()
    return 0


def _train_cascade(args, stack, inner_cfg, training, preprocess, classes, preset) -> int:
    from napari_numsnet import pipeline
    from napari_numsnet.cascade import save_cascade, train_cascade

    if args.resume or args.transfer:
        raise NumsnetError(
            "--cascade cannot be combined with --resume or --transfer.",
            "Train the cascade from scratch.",
        )
    region_cfg = pipeline.model_for_preset(args.cascade, 2, preset)
    if args.widths:
        region_cfg = region_cfg.replace(widths=args.widths)
    cascade = train_cascade(
        stack,
        region_cfg,
        inner_cfg,
        training,
        preprocess,
        classes,
        region_values=_parse_slices(args.region_values),
        callback=_progress(),
    )
    path = save_cascade(cascade, args.output)
    print(f"cascade: {path} (region: {region_cfg.name}, inside: {inner_cfg.name})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from napari_numsnet import cohort, pipeline
    from napari_numsnet.cascade import load_predictor

    inputs = list(args.input or [])
    if args.input_list:
        inputs += cohort.read_input_list(args.input_list)
    if not inputs:
        raise NumsnetError("Nothing to predict.", "Give --input files/folders or --input-list.")
    config = PredictConfig(
        direction=args.direction, batch_size=args.batch_size, device=args.device
    )
    output = Path(args.output)
    files = pipeline.stack_files(inputs)
    options.check_predict_options(args, files)
    if len(files) == 1 and pipeline.is_stack(output) and not output.is_dir():
        kept = output.exists() and not args.overwrite
        if not kept:
            options.check_output(output, [*files, args.checkpoint])
        results = pipeline.predict_files(
            load_predictor(args.checkpoint),
            files,
            output,
            config,
            stack_axis=args.stack_axis,
            probabilities=args.probabilities,
            overwrite=args.overwrite,
        )
        for src, dst in results:
            print(
                f"kept existing {dst} (give --overwrite to replace it)"
                if kept
                else f"{src} -> {dst}"
            )
        print(f"{0 if kept else 1} written, {1 if kept else 0} kept existing")
        return 0

    def report(record: dict, finished: int, total: int) -> None:
        status = record["status"]
        detail = f"{record.get('seconds', 0):.1f} s" if status == "done" else record.get("error")
        print(f"[{finished}/{total}] {status}: {record['input']} ({detail})", flush=True)

    summary = cohort.predict_cohort(
        args.checkpoint,
        files,
        output,
        config,
        workers=args.workers,
        stack_axis=args.stack_axis,
        probabilities=args.probabilities,
        overwrite=args.overwrite,
        progress=report,
    )
    print(
        f"{summary.done} done ({summary.skipped} already done before), "
        f"{summary.failed} failed, {summary.count('pending')} pending; "
        f"manifest: {summary.manifest}"
    )
    return 0 if summary.done == len(summary.records) else 1


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
    from napari_numsnet.io.volume import read_volume

    reference_volume = read_volume(args.reference, stack_axis=args.stack_axis)
    reference = read_labels(args.reference, like=reference_volume.meta)
    predicted = read_labels(args.prediction, like=reference_volume.meta)
    if args.classes:
        classes = load_class_table(args.classes)
    else:
        classes = ClassTable.default(int(max(reference.max(), predicted.max())) + 1)
    slices = _parse_slices(args.slices)
    options.check_slices("--slices", slices, reference.shape[0], args.reference)
    scores = pipeline.evaluate(predicted, reference, classes, slices)
    print(_score_table(scores))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from napari_numsnet.models import list_models

    print(f"{'name':<11}{'model':<11}{'parameters':>12}  description")
    for spec, count in list_models(args.in_channels, args.num_classes):
        print(f"{spec.name:<11}{spec.title:<11}{count:>12,}  {spec.description}")
    print(f"(parameters as Keras counts them, for {args.num_classes} classes)")
    return 0


#: Help of ``--threads`` (demo, train, predict).
THREADS_HELP = (
    "CPU threads (shared by --workers); 0 = the cores other programs leave free, "
    "looked at again between epochs (default 0)"
)


def _apply_threads(args: argparse.Namespace) -> None:
    """The thread policy for the commands that compute (``--threads``); torchrun's local
    ranks on one machine share the free cores."""
    if not hasattr(args, "threads"):
        return
    import os

    from napari_numsnet.engine.threads import apply_threads

    apply_threads(args.threads, share=int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="numsnet", description="Few-shot segmentation of 3D medical image stacks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    presets = sorted(PRESETS)

    p = sub.add_parser("demo", help="the few-shot loop on the shipped CT sample")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--preset", choices=presets, help="default: paper on a GPU, fast on CPU")
    p.add_argument("--epochs", type=int, help="train for this many epochs instead of steps")
    p.add_argument("--steps", type=int, help="a fixed step budget instead of the preset's")
    p.add_argument("--fraction", type=float, default=0.10, help="slices annotated (0.10)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="numsnet-demo", help="folder for the results")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--size", type=int, help="slice side for the network (0 = native)")
    p.add_argument("--widths", type=_parse_widths, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train on the annotated slices of a stack")
    p.add_argument("--image", required=True, nargs="+", help=".nii/.nii.gz/.tif/.npy stack(s)")
    p.add_argument("--labels", required=True, nargs="+", help="label stack(s), same geometry")
    p.add_argument("--annotated", help="annotated slices, e.g. '3,7,10-12' (default: labelled)")
    p.add_argument("--val", help="annotated slices held out for validation")
    p.add_argument("--classes", help="class table JSON (names and colours)")
    p.add_argument("--num-classes", type=int, help="label values incl. background")
    p.add_argument("--model", help=f"model to train (default {DEFAULT_MODEL})")
    p.add_argument("--preset", choices=presets, default="paper")
    p.add_argument("--epochs", type=int, help="train for this many epochs instead of steps")
    p.add_argument("--steps", type=int, help="a fixed step budget instead of the preset's")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--size", type=int, help="slice side for the network (0 = native)")
    p.add_argument("--resume", help="checkpoint to continue training")
    p.add_argument("--transfer", help="checkpoint to reuse all layers but the head")
    p.add_argument(
        "--cascade",
        metavar="REGION_MODEL",
        help="CHS-Net cascade: this model segments the region, --model the classes inside it",
    )
    p.add_argument("--region-values", help="label values forming the region (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stack-axis", type=int)
    p.add_argument("--output", required=True, help="checkpoint to write (*.numsnet.pt)")
    p.add_argument("--widths", type=_parse_widths, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="segment a stack, a folder or a list of stacks")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input", nargs="+", help="files or folders")
    p.add_argument("--input-list", help="text file with one stack path per line")
    p.add_argument("--output", required=True, help="file (one input) or folder")
    p.add_argument("--workers", type=int, help="processes (default: one per GPU, else one on CPU)")
    p.add_argument("--direction", choices=["forward", "backward", "both"], default="forward")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--probabilities", action="store_true", help="also write probabilities")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--stack-axis", type=int)
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("pseudolabel", help="k-means pseudo-labels of a CT stack")
    p.add_argument("--image", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--stack-axis", type=int)
    p.set_defaults(func=cmd_pseudolabel)

    p = sub.add_parser("evaluate", help="Dice, IoU, precision, recall per class")
    p.add_argument("--prediction", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--classes")
    p.add_argument("--slices", help="only these slices, e.g. '0-9,20'")
    p.add_argument("--stack-axis", type=int)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="list the models with their parameter counts")
    p.add_argument("--num-classes", type=int, default=3)
    p.add_argument("--in-channels", type=int, default=1)
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
