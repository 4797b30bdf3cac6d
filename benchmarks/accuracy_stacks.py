"""Few-shot accuracy on labelled stacks (ACDC by default): every model, several seeds.

Protocol (the plugin's): for each stack of the training pool only the slices chosen by
the planner (``--strategy``, default the package's) at ``--fraction`` (at least one per
stack) are annotated; a model is trained on them and evaluated on every slice of every
evaluation stack at native resolution. ``--regime all`` trains on every slice of the pool
instead (the upper bound). Dice, IoU, precision and recall per class are pooled over all
evaluation voxels; Dice is also given as the mean over volumes (the SSL4MIS convention).
``--curve-seconds`` scores the evaluation stacks during training (a learning curve against
steps and wall time; the scoring time is not counted as training time); ``--curve-steps``
scores them at the first validation past every N steps and after the last step, so that
the curve's last point is the last weights (the run itself returns the best validated).

Any folder with ``imagesX/`` and ``labelsX/`` (same file names) works::

    python benchmarks/accuracy_stacks.py --dataset acdc --train-split Tr --eval-split Val

Results: one JSON line per run in ``<out>/accuracy_<dataset>.jsonl``; ``--summary``
prints the tables (mean ± sample std over seeds).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import peers
from stacks_data import ACDC_CLASSES, annotate, load_pool, stack_pairs
from stacks_tables import mean_dice, run_summary, summarize, summarize_pruned

from napari_numsnet import pipeline
from napari_numsnet.config import SamplingConfig
from napari_numsnet.engine.metrics import SegmentationMetrics
from napari_numsnet.engine.postprocess import keep_largest_component
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.presets import PRESETS


def per_volume_dice(per_stack: list[dict[str, dict[str, float]]], names: list[str]) -> dict:
    """Mean Dice over volumes per class (a class absent from both sides is left out)."""
    out = {}
    for name in names[1:]:
        values = [s[name]["dice"] for s in per_stack if not np.isnan(s[name]["dice"])]
        out[name] = float(np.mean(values)) if values else float("nan")
    return out


def evaluate_pool(
    checkpoint,
    stacks: list[pipeline.AnnotatedStack],
    classes: ClassTable,
    device: str,
    prune_level: int | None = None,
    largest_component: bool = False,
    mirror: bool = False,
) -> tuple[dict[str, dict[str, float]], float, int]:
    """Pooled metrics over every slice of ``stacks``, prediction seconds, slices.

    ``prune_level`` k predicts with UNet# in its fast mode, pruned to head X(0,k).
    ``largest_component`` also scores the same predictions with every class reduced to
    its largest 3D connected component (``dice_largest_component``,
    ``dice_per_volume_largest_component``) and with the classes the checkpoint's
    validation slices chose (``dice_chosen_component``, ``dice_per_volume_chosen_component``,
    as ``numsnet predict`` does by default). ``mirror`` predicts with test-time flips.
    """
    from napari_numsnet.config import PredictConfig
    from napari_numsnet.engine.predict import predict_volume

    model = checkpoint.build_model()
    if prune_level is not None:
        model.set_inference_head(prune_level)
    variants = {"": None}
    if largest_component:
        variants["_largest_component"] = tuple(range(1, classes.num_values))
        variants["_chosen_component"] = checkpoint.largest_component
    pooled = {key: SegmentationMetrics(classes.num_values, classes.names) for key in variants}
    per_stack: dict[str, list[dict[str, dict[str, float]]]] = {key: [] for key in variants}
    seconds, n = 0.0, 0
    for stack in stacks:
        start = time.perf_counter()
        pred = predict_volume(
            model,
            stack.image,
            checkpoint.preprocess,
            PredictConfig(device=device, mirror=mirror, largest_component=()),
            return_probabilities=False,
        )
        seconds += time.perf_counter() - start
        n += len(stack.image)
        for key, values in variants.items():
            labels = pred.labels if not values else keep_largest_component(pred.labels, values)
            pooled[key].update(labels, stack.labels)
            one = SegmentationMetrics(classes.num_values, classes.names)
            one.update(labels, stack.labels)
            per_stack[key].append(one.summary())
    summary = pooled[""].summary()
    for key in variants:
        if key:  # the same predictions, post-processed
            for name, values in pooled[key].summary().items():
                summary[name][f"dice{key}"] = values["dice"]
        for name, dice in per_volume_dice(per_stack[key], list(classes.names)).items():
            summary[name][f"dice_per_volume{key}"] = dice
    return summary, seconds, n


def run_one(
    model: str,
    seed: int,
    regime: str,
    pool: list[pipeline.AnnotatedStack],
    evaluation: list[pipeline.AnnotatedStack],
    args,
    classes: ClassTable,
) -> dict[str, Any]:
    """Train ``model`` with ``seed`` under ``regime`` and score it on ``evaluation``."""
    preset = PRESETS[args.preset]
    if args.width_scale:
        preset = dataclasses.replace(preset, width_scale=args.width_scale)
    annotated, n_train = annotate(
        pool, regime, args.fraction, seed, args.strategy, args.validation_every
    )
    model_cfg = pipeline.model_for_preset(model, classes.num_values, preset)
    if args.context is not None:
        model_cfg = model_cfg.replace(context=args.context)
    training = preset.train.replace(device=args.device, seed=seed)
    if args.epochs:
        training = training.replace(epochs=args.epochs, steps=0)
    if args.steps:
        training = training.replace(steps=args.steps)
    for key in (
        "batch_size",
        "loss",
        "schedule",
        "intensity_augment",
        "mirror",
        "weight_average",
        "learning_rate",
        "optimizer",
        "weight_decay",
    ):
        if getattr(args, key) is not None:
            training = training.replace(**{key: getattr(args, key)})
    training = training.replace(**common.recipe_overrides(args))
    preprocess = pipeline.default_preprocess(pool[0].image, preset.preprocess)
    if args.size:
        preprocess = preprocess.replace(size=args.size)
    if args.clip_percentiles is not None:
        preprocess = preprocess.replace(clip_percentiles=args.clip_percentiles)
    curve: list[dict[str, Any]] = []
    scoring = [0.0]

    next_point = [args.curve_steps]

    def score_now(result, which: str) -> None:
        """Learning curve: score the evaluation stacks with the current weights."""
        if which != "last":
            return
        if args.curve_steps:
            done = int(result.record["steps_done"])
            if done < min(next_point[0], result.record["budget"]["steps"]):
                return
            while next_point[0] <= done:
                next_point[0] += args.curve_steps
        started = time.perf_counter()
        from napari_numsnet.engine.checkpoint import Checkpoint

        snapshot = Checkpoint.from_model(
            result.model, preprocess=preprocess, class_names=list(classes.names)
        )
        now, _, _ = evaluate_pool(snapshot, evaluation, classes, args.device)
        step = int(result.record["epochs"][-1]["step"]) if result.record["epochs"] else 0
        curve.append(
            {
                "step": step,
                "train_seconds": started - start - scoring[0],
                "dice": mean_dice(now),
                "dice_per_volume": mean_dice(now, "dice_per_volume"),
            }
        )
        scoring[0] += time.perf_counter() - started
        point = curve[-1]
        print(
            f"  curve: step {point['step']}, {point['train_seconds'] / 60:.1f} min, "
            f"Dice {point['dice']:.3f} pooled, {point['dice_per_volume']:.3f} per volume",
            flush=True,
        )
        result.model.train()

    if args.curve_seconds:
        training = training.replace(checkpoint_seconds=args.curve_seconds)
    if args.curve_steps:
        training = training.replace(checkpoint_seconds=0.0)
    start = time.perf_counter()
    checkpoint = pipeline.train(
        annotated,
        model_cfg,
        training,
        preprocess,
        classes,
        on_checkpoint=score_now if args.curve_seconds or args.curve_steps else None,
    )
    train_seconds = time.perf_counter() - start - scoring[0]
    scores, predict_seconds, n_eval = evaluate_pool(
        checkpoint, evaluation, classes, args.device, largest_component=args.largest_component
    )
    if args.tta:  # the same weights with test-time flips
        tta, tta_seconds, _ = evaluate_pool(
            checkpoint,
            evaluation,
            classes,
            args.device,
            largest_component=args.largest_component,
            mirror=True,
        )
    pruned = {}
    if args.unetsharp_pruned and model == "unetsharp":  # the same weights, heads X(0,1..4)
        for level in (1, 2, 3, 4):
            level_scores, level_seconds, _ = evaluate_pool(
                checkpoint, evaluation, classes, args.device, prune_level=level
            )
            pruned[str(level)] = {"scores": level_scores, "predict_seconds": level_seconds}
    record = {
        "dataset": args.dataset,
        "model": model,
        "seed": seed,
        "regime": regime,
        "fraction": args.fraction if regime == "few" else 1.0,
        "preset": preset.name,
        "widths": list(checkpoint.model_config.widths),
        "context": checkpoint.model_config.context,
        "size": preprocess.size,
        "preprocess": preprocess.to_dict(),
        "epochs": training.epochs,
        "steps": checkpoint.record.get("steps_done"),
        "strategy": args.strategy,
        "recipe": training.to_dict(),
        "best": checkpoint.record.get("best"),
        "chosen_component": checkpoint.record.get("largest_component"),
        "curve": curve,
        "batch_size": checkpoint.record.get("batch_size", training.batch_size),
        "train_stacks": len(pool),
        "train_slices": n_train,
        "eval_stacks": len(evaluation),
        "eval_slices": n_eval,
        "train_seconds": train_seconds,
        "epoch_losses": [e["loss"] for e in checkpoint.record.get("epochs", [])],
        "predict_seconds": predict_seconds,
        "scores": scores,
        "layout": common.layout(args),
        "machine": common.machine(args.device),
    }
    if pruned:
        record["pruned"] = pruned
    if args.tta:
        record["tta"] = {"scores": tta, "predict_seconds": tta_seconds}
    return record


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="acdc", help="sub-folder of the data root")
    parser.add_argument("--train-split", default="Tr", help="imagesX/labelsX suffix to train on")
    parser.add_argument("--eval-split", default="Val", help="imagesX/labelsX suffix to score")
    parser.add_argument("--models", default=",".join(common.ALL_MODELS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--regimes", default="few", help="few, all, or few,all")
    parser.add_argument("--patients", type=int, default=20, help="patients of the pool")
    parser.add_argument("--eval-stacks", type=int, default=None, help="first N eval stacks")
    parser.add_argument("--fraction", type=float, default=0.10)
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument("--epochs", type=int, default=0, help="epochs instead of steps")
    parser.add_argument("--steps", type=int, default=0, help="step budget (0: the preset's)")
    parser.add_argument("--strategy", default=SamplingConfig().strategy, help="slice planner")
    parser.add_argument("--loss", default=None, help="override the preset's loss")
    parser.add_argument("--schedule", default=None, help="override the preset's schedule")
    parser.add_argument(
        "--mirror",
        action="store_const",
        const=True,
        default=None,
        help="flip each in-plane axis with probability 1/2 in training (nnU-Net's mirroring)",
    )
    parser.add_argument(
        "--tta", action="store_true", help="also score the same weights with test-time flips"
    )
    common.add_recipe_arguments(parser)
    parser.add_argument(
        "--intensity-augment",
        action="store_const",
        const=True,
        default=None,
        help="add nnU-Net's intensity augmentation to the preset's affine one",
    )
    parser.add_argument(
        "--validation-every",
        type=int,
        default=4,
        help="hold out the planner's validation slice of every k-th stack (0: none)",
    )
    parser.add_argument(
        "--curve-seconds", type=float, default=0, help="score the eval stacks this often"
    )
    parser.add_argument(
        "--curve-steps",
        type=int,
        default=0,
        help="score the eval stacks every N steps and after the last one (the last weights)",
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None, help="peak learning rate")
    parser.add_argument("--optimizer", choices=("adam", "adamw"), default=None)
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW's decay")
    parser.add_argument(
        "--weight-average",
        type=float,
        default=None,
        help="decay of the moving average of the weights that is validated and kept",
    )
    parser.add_argument("--size", type=int, default=None, help="override the preset's size")
    parser.add_argument(
        "--clip-percentiles",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=None,
        help="LOW,HIGH percentiles to clip each stack to before min-max scaling (default: none)",
    )
    parser.add_argument(
        "--width-scale", type=float, default=None, help="override the preset's width scale"
    )
    parser.add_argument(
        "--largest-component",
        action="store_true",
        help="also score each class reduced to its largest 3D connected component",
    )
    parser.add_argument(
        "--context", type=int, default=None, help="2.5D neighbours each side (slice models)"
    )
    parser.add_argument("--class-names", default=",".join(ACDC_CLASSES))
    parser.add_argument(
        "--unetsharp-pruned",
        action="store_true",
        help="UNet#: also score the fast mode pruned to each head X(0,1..4), same weights",
    )
    parser.add_argument("--name", default=None, help="results file stem (accuracy_<dataset>)")
    parser.add_argument("--summary", action="store_true", help="only print the tables")
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    common.apply_layout(args)
    result_file = args.out / f"{args.name or 'accuracy_' + args.dataset}.jsonl"
    classes = ClassTable.from_names(common.csv_list(args.class_names))
    if args.summary:
        records = common.read_results(result_file)
        print(summarize(records, list(classes.names)))
        print(summarize_pruned(records, list(classes.names)))
        return 0
    peers.register(common.csv_list(args.models))
    folder = args.data_root / args.dataset
    pool = load_pool(stack_pairs(folder, args.train_split), args.patients)
    evaluation = load_pool(stack_pairs(folder, args.eval_split), None)[: args.eval_stacks]
    print(f"pool: {len(pool)} stacks; evaluation: {len(evaluation)} stacks", flush=True)
    for regime in common.csv_list(args.regimes):
        for seed in common.int_list(args.seeds):
            for model in common.csv_list(args.models):
                record = run_one(model, seed, regime, pool, evaluation, args, classes)
                common.append_result(result_file, record)
                print(f"{regime} seed {seed} {model}: " + run_summary(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
