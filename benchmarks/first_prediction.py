"""Time to first useful prediction on the shipped CT sample.

From "10% of the CT sample annotated" (the default planner: 3 of 30 slices and one
validation slice) to a prediction of the whole stack: preprocessing, training with the
preset, prediction of every slice. The clock covers
:func:`napari_numsnet.pipeline.annotate_train_predict` (what ``numsnet demo`` runs); the
Dice is on the slices the model neither trained nor validated on.

    python benchmarks/first_prediction.py --preset fast --seeds 0,1,2

Results: ``<out>/first_prediction.jsonl``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PredictConfig, SamplingConfig, TrainConfig
from napari_numsnet.presets import PRESETS, Preset
from napari_numsnet.workflows.loop import LoopResult
from napari_numsnet.workflows.sample import Sample


def run_protocol(
    sample: Sample,
    model: ModelConfig,
    training: TrainConfig,
    preset: Preset,
    seed: int,
    fraction: float = 0.1,
    size: int | None = None,
) -> tuple[LoopResult, TrainConfig]:
    """``numsnet demo``'s protocol on the CT sample: plan ``fraction`` of the slices with
    ``seed``, clamp the batch to the planned slices, preprocess as the preset does (at
    ``size`` px if given), train, predict the whole stack and score the unseen slices.

    Returns the result and the recipe it trained with (the batch clamped)."""
    image = sample.volume.data
    sampling = SamplingConfig(fraction=fraction, seed=seed)
    planned = len(pipeline.plan_slices(len(image), sampling).train)
    training = training.replace(batch_size=min(training.batch_size, planned))
    preprocess = pipeline.default_preprocess(image, preset.preprocess)
    if size:
        preprocess = preprocess.replace(size=size)
    result = pipeline.annotate_train_predict(
        image, sample.labels, sample.classes, model, training, preprocess, sampling
    )
    return result, training


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(common.ALL_MODELS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs instead of the preset's step budget"
    )
    parser.add_argument("--fraction", type=float, default=0.10)
    parser.add_argument("--size", type=int, default=None, help="override the preset's size")
    parser.add_argument(
        "--run-length",
        type=int,
        default=None,
        help="consecutive slices per NUMSnet-family training run (default: the preset's)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="slices per batch (default: the preset's)"
    )
    parser.add_argument(
        "--context",
        type=int,
        default=None,
        help="2.5D input: neighbouring slices on each side (slice models; default: preset's)",
    )
    parser.add_argument(
        "--directions",
        default="",
        help="also score these directions of travel, e.g. forward,both (NUMSnet family; the "
        "prediction itself is in the checkpoint's direction)",
    )
    common.add_recipe_arguments(parser)
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    common.apply_layout(args)
    preset = PRESETS[args.preset]
    for seed in common.int_list(args.seeds):
        for name in common.csv_list(args.models):
            start = time.perf_counter()
            sample = pipeline.load_sample()
            image, reference, classes = sample.volume.data, sample.labels, sample.classes
            model = pipeline.model_for_preset(name, classes.num_values, preset)
            if args.context is not None:
                model = model.replace(context=args.context)
            training = preset.train.replace(device=args.device, seed=seed)
            if args.epochs:  # an epoch count replaces the preset's step budget
                training = training.replace(epochs=args.epochs, steps=0, steps_per_slice=0)
            if args.batch_size is not None:
                training = training.replace(batch_size=args.batch_size)
            if args.run_length is not None:
                training = training.replace(run_length=args.run_length)
            training = training.replace(**common.recipe_overrides(args))
            result, training = run_protocol(
                sample, model, training, preset, seed, args.fraction, args.size
            )
            total = time.perf_counter() - start
            foreground = {k: v for k, v in result.scores.items() if k != "background"}
            by_direction = {}
            for direction in common.csv_list(args.directions):
                config = PredictConfig(device=args.device, direction=direction)
                labels = pipeline.predict(result.checkpoint, image, config).labels
                scores = pipeline.evaluate(labels, reference, classes, result.unseen)
                by_direction[direction] = {
                    "scores": scores,
                    "mean_dice": float(
                        np.nanmean([v["dice"] for k, v in scores.items() if k != "background"])
                    ),
                }
            record = {
                "model": name,
                "seed": seed,
                "preset": preset.name,
                "epochs": training.epochs,
                "batch_size": training.batch_size,
                "run_length": training.run_length,
                "context": model.context,
                "recipe": training.to_dict(),
                "steps": result.checkpoint.record.get("budget", {}).get("steps"),
                "size": result.checkpoint.preprocess.size,
                "widths": list(result.checkpoint.model_config.widths),
                "annotated": [int(i) for i in result.split.train],
                "seconds_total": total,
                "seconds_training": result.checkpoint.record.get("seconds"),
                "direction": result.checkpoint.direction,
                "scores": result.scores,
                "mean_dice": float(np.nanmean([v["dice"] for v in foreground.values()])),
                "by_direction": by_direction,
                "device": args.device,
                "layout": common.layout(args),
                "machine": common.machine(args.device),
            }
            common.append_result(args.out / "first_prediction.jsonl", record)
            print(
                f"{name} seed {seed}: {total:.1f} s to a full-stack prediction "
                f"({record['seconds_training']:.1f} s training), "
                f"mean Dice {record['mean_dice']:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
