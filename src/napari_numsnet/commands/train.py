"""``numsnet train``: one model or a cascade from annotated slices."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_numsnet import options
from napari_numsnet.commands.common import (
    _batch_note,
    _budget,
    _context_note,
    _parse_slices,
    _progress,
    _read_stack,
    _recipe_note,
    _with_budget,
)
from napari_numsnet.data.slices import annotated_slices
from napari_numsnet.engine.class_weights import takes_class_weights
from napari_numsnet.engine.device import select_device
from napari_numsnet.engine.recipe import takes_semi_supervised
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import get_spec
from napari_numsnet.models.default_choice import default_model, default_model_reason
from napari_numsnet.presets import PRESETS, default_preset, get_preset


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
    resume = load_checkpoint(resume_path(args.resume, args.output)) if args.resume else None
    device = str(context.device) if context else args.device
    preset = get_preset(args.preset or _preset_of(resume, device))
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
    model_name = args.model or default_model(volumes[0].data)
    model_cfg = pipeline.model_for_preset(model_name, classes.num_values, preset)
    if args.widths:
        model_cfg = model_cfg.replace(widths=args.widths)
    if args.context is not None:
        model_cfg = model_cfg.replace(context=args.context)
    training = preset.train.replace(device=device, seed=args.seed)
    training = _with_budget(training, args.epochs, args.steps)
    for key in ("batch_size", "learning_rate", "patch_size", "class_weights", "semi_supervised"):
        if getattr(args, key) is not None:
            training = training.replace(**{key: getattr(args, key)})
    built = resume.model_config if resume is not None else model_cfg
    if training.class_weights != "none" and not takes_class_weights(
        training.loss, built.exclusive
    ):
        raise NumsnetError(
            f"--class-weights {training.class_weights} weighs a cross-entropy, and this run "
            f"(preset {preset.name}) trains with the {training.loss!r} loss"
            + ("" if built.exclusive else " on independent classes")
            + ", which has none.",
            "Use the fast preset (Dice + cross-entropy) with a model of exclusive classes, "
            "or leave out --class-weights.",
        )
    if (args.semi_supervised or 0) > 0 and not takes_semi_supervised(
        get_spec(built.name).kind, built.exclusive
    ):
        raise NumsnetError(
            f"--semi-supervised {args.semi_supervised} asks for a term that {built.name} "
            "cannot learn from: it is for slice models with exclusive classes.",
            "Leave out --semi-supervised (or give 0), or choose a slice model such as "
            "drsegunet or unet.",
        )
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
    if main_process:
        per_stack = [annotated_slices(s.labels, s.annotated) for s in stacks]
        n = sum(len(slices) for slices in per_stack)
        trained_on = sum(
            len(np.setdiff1d(slices, s.val_slices))
            for slices, s in zip(per_stack, stacks, strict=True)
        )
        unannotated = sum(len(s.labels) for s in stacks) - trained_on
        if args.annotated is None:
            print(
                f"no --annotated: every slice with a label counts as annotated ({n} slices); "
                "give --annotated to train on some of them only"
            )
        why = "" if args.model or resume is not None else f" ({default_model_reason(built.name)})"
        print(
            f"model {built.name}{why}{_context_note(built.context)}; preset {preset.name}: "
            f"{_budget(training, n)}, {_batch_note(built.name, training, n)}"
            + _recipe_note(built.name, training, device, trained_on, unannotated, built.exclusive)
        )
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
        if "largest_component" in checkpoint.record:
            chosen = [checkpoint.class_names[v] for v in checkpoint.largest_component]
            print(
                "largest component only, by default when predicting: "
                + (", ".join(chosen) if chosen else "no class")
                + " (chosen on the validation slices)"
            )
    distributed.barrier()
    return 0


def _preset_of(resume, device: str) -> str:
    """A resumed run keeps its preset; a new one takes the device's default."""
    saved = None if resume is None else resume.train_config
    if saved is not None and saved.preset in PRESETS:
        return saved.preset
    return default_preset(select_device(device).type)


def _train_cascade(args, stack, inner_cfg, training, preprocess, classes, preset) -> int:
    from napari_numsnet import pipeline
    from napari_numsnet.workflows.cascade import save_cascade, train_cascade

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
