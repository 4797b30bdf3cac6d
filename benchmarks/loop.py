"""The correction loop with a simulated annotator: which slice to correct next.

Every stack starts with the default plan (``spread``, 10% of its slices, at least one),
annotated from the reference; one model is trained on all the stacks' annotations with
the preset's recipe (``--initial-epochs`` replaces its step budget by an epoch count). Then
``--rounds`` times: predict every stack, choose one more slice per stack by a strategy,
copy its reference labels into the annotations (the simulated correction) and continue
training for ``--budget-steps`` steps (:func:`napari_numsnet.workflows.retrain.retrain`).

Strategies (``--strategies``):

* ``entropy``, ``entropy_sum``, ``margin``, ``tta``: the suggestion
  (:mod:`napari_numsnet.engine.suggest`), score/weighting ``entropy/foreground``,
  ``entropy/sum``, ``margin/foreground``, ``tta/foreground``;
* ``random``: an unannotated slice at random;
* ``even``: the unannotated slice farthest from every annotated one (evenly spaced);
* ``oracle``: the slice with the lowest Dice against the reference (the issue's upper
  bound, which needs the answer);
* ``oracle_errors``: the slice with the most wrongly labelled voxels (also needs the
  answer; the slice whose replacement by its annotation raises the user's Dice most).

Scored after each prediction, per stack: the mean foreground Dice of the user's result
(the prediction with the annotated slices replaced by their annotation; ``dice``) and of
the model alone on the slices not annotated (``model_dice``); the mean over the stacks is
plotted against the slices corrected per stack and against CPU minutes (process time:
training, prediction and scoring, from the first training on).

Any folder with ``imagesX/`` and ``labelsX/`` works, or the shipped CT sample::

    python benchmarks/loop.py --dataset acdc --split Val --rounds 4 --seeds 0,1,2
    python benchmarks/loop.py --dataset sample --rounds 6

Results: one JSON line per (dataset, seed, strategy) in ``<out>/loop_<dataset>.jsonl``;
``--summary`` writes the tables (``loop_<dataset>.md``) and the plots
(``loop_<dataset>.png``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import loop_report
import stacks_data

from napari_numsnet import pipeline
from napari_numsnet.config import PredictConfig, SamplingConfig
from napari_numsnet.engine.checkpoint import load_checkpoint, save_checkpoint
from napari_numsnet.engine.predict import predict_volume
from napari_numsnet.engine.suggest import suggest_from_probabilities
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.presets import PRESETS
from napari_numsnet.workflows.retrain import RETRAIN_LR_FACTOR, retrain

#: The suggestion strategies: name -> (score, weighting).
SUGGESTIONS = {
    "entropy": ("entropy", "foreground"),
    "entropy_sum": ("entropy", "sum"),
    "margin": ("margin", "foreground"),
    "tta": ("tta", "foreground"),
}
STRATEGIES = (*SUGGESTIONS, "random", "even", "oracle", "oracle_errors")


def slice_dice(predicted: np.ndarray, reference: np.ndarray, n_values: int) -> np.ndarray:
    """Mean foreground Dice of every slice, ``(Z,)``; 1 where both are empty."""
    out = np.ones(len(predicted))
    for z in range(len(predicted)):
        values = []
        for c in range(1, n_values):
            p, r = predicted[z] == c, reference[z] == c
            total = p.sum() + r.sum()
            if total:
                values.append(2.0 * np.logical_and(p, r).sum() / total)
        if values:
            out[z] = float(np.mean(values))
    return out


def stack_dice(predicted: np.ndarray, reference: np.ndarray, n_values: int) -> float:
    """Mean over the foreground classes present of the stack's Dice (NaN if none)."""
    values = []
    for c in range(1, n_values):
        p, r = predicted == c, reference == c
        total = p.sum() + r.sum()
        if total:
            values.append(2.0 * np.logical_and(p, r).sum() / total)
    return float(np.mean(values)) if values else float("nan")


def farthest_slice(n_slices: int, annotated: np.ndarray) -> int:
    """The unannotated slice farthest from every annotated one (lowest index on ties)."""
    candidates = np.setdiff1d(np.arange(n_slices), annotated)
    distance = np.abs(candidates[:, None] - annotated[None, :]).min(axis=1)
    return int(candidates[np.argmax(distance)])


def choose(
    strategy: str,
    annotated: np.ndarray,
    labels: np.ndarray,
    prob: np.ndarray,
    second: np.ndarray | None,
    reference: np.ndarray,
    n_values: int,
    rng: np.random.Generator,
) -> int | None:
    """The next slice of one stack under ``strategy`` (``None`` when all are annotated)."""
    n = len(reference)
    if len(annotated) >= n:
        return None
    if strategy in SUGGESTIONS:
        kind, weighting = SUGGESTIONS[strategy]
        suggestion = suggest_from_probabilities(
            prob,
            annotated,
            True,
            kind,
            weighting,
            second,  # type: ignore[arg-type]
        )
        return int(suggestion.ranking[0])
    if strategy == "random":
        return int(rng.choice(np.setdiff1d(np.arange(n), annotated)))
    if strategy == "even":
        return farthest_slice(n, annotated)
    if strategy == "oracle":
        dice = slice_dice(labels, reference, n_values)
        dice[annotated] = np.inf
        return int(np.argmin(dice))
    if strategy == "oracle_errors":
        errors = (labels != reference).reshape(n, -1).sum(axis=1).astype(float)
        errors[annotated] = -1.0
        return int(np.argmax(errors))
    raise SystemExit(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")


def predict_all(
    checkpoint: pipeline.Checkpoint, stacks: list[pipeline.AnnotatedStack], tta: bool
) -> tuple[list[Any], float, float]:
    """Predictions (labels, probabilities, flipped probabilities) of every stack.

    Returns the predictions, the seconds of the plain predictions and those of the
    flipped pass (0 without ``tta``).
    """
    model = checkpoint.build_model()
    config = PredictConfig(device="cpu")
    out, plain, extra = [], 0.0, 0.0
    for stack in stacks:
        start = time.perf_counter()
        pred = predict_volume(model, stack.image, checkpoint.preprocess, config)
        plain += time.perf_counter() - start
        second = None
        if tta:
            start = time.perf_counter()
            flipped = np.ascontiguousarray(stack.image[:, :, ::-1])
            flip = predict_volume(model, flipped, checkpoint.preprocess, config)
            assert flip.probabilities is not None
            second = np.ascontiguousarray(flip.probabilities[..., ::-1])
            extra += time.perf_counter() - start
        out.append((pred.labels, pred.probabilities, second))
    return out, plain, extra


def run_strategy(
    strategy: str,
    start: pipeline.Checkpoint,
    stacks: list[pipeline.AnnotatedStack],
    initial: list[np.ndarray],
    classes: ClassTable,
    args: Any,
    seed: int,
    cpu_start: float,
) -> dict[str, Any]:
    """The loop from ``start`` under one strategy; one entry per round."""
    rng = np.random.default_rng(1000 + seed)
    n_values = classes.num_values
    annotated = [a.copy() for a in initial]
    checkpoint, rounds = start, []
    cpu = cpu_start
    for k in range(args.rounds + 1):
        t0 = time.process_time()
        predictions, plain, extra = predict_all(checkpoint, stacks, strategy == "tta")
        dice, model_dice, chosen = [], [], []
        score_seconds = 0.0
        for stack, ann, (labels, prob, second) in zip(stacks, annotated, predictions, strict=True):
            result = labels.copy()
            result[ann] = stack.labels[ann]
            dice.append(stack_dice(result, stack.labels, n_values))
            free = np.setdiff1d(np.arange(len(labels)), ann)
            model_dice.append(stack_dice(labels[free], stack.labels[free], n_values))
            if k < args.rounds:
                s0 = time.perf_counter()
                pick = choose(strategy, ann, labels, prob, second, stack.labels, n_values, rng)
                score_seconds += time.perf_counter() - s0
                chosen.append(pick)
        cpu += time.process_time() - t0
        entry: dict[str, Any] = {
            "round": k,
            "annotated_slices": int(sum(len(a) for a in annotated)),
            "dice": float(np.nanmean(dice)),
            "model_dice": float(np.nanmean(model_dice)),
            "stack_dice": dice,
            "predict_seconds": plain,
            "tta_seconds": extra,
            "choose_seconds": score_seconds,
            "cpu_minutes": cpu / 60.0,
        }
        if k == args.rounds:
            rounds.append(entry)
            break
        annotated = [
            a if pick is None else np.sort(np.append(a, pick))
            for a, pick in zip(annotated, chosen, strict=True)
        ]
        entry["chosen"] = chosen
        t2 = time.process_time()
        result = retrain(
            checkpoint,
            [
                pipeline.AnnotatedStack(s.image, s.labels, a, (), s.name)
                for s, a in zip(stacks, annotated, strict=True)
            ],
            budget_steps=args.budget_steps,
            learning_rate_factor=args.retrain_lr_factor,
        )
        cpu += time.process_time() - t2
        checkpoint = result.checkpoint
        entry["retrain_seconds"] = result.seconds
        entry["retrain_steps"] = result.steps
        entry["cpu_minutes_after_retrain"] = cpu / 60.0
        rounds.append(entry)
        print(
            f"  {strategy} round {k}: Dice {entry['dice']:.3f} (model {entry['model_dice']:.3f}),"
            f" retrain {result.seconds:.1f} s, predict {plain:.1f} s",
            flush=True,
        )
    return {"strategy": strategy, "rounds": rounds}


def load_stacks(args: Any) -> tuple[list[pipeline.AnnotatedStack], ClassTable]:
    """The stacks with their reference labels, and the class table."""
    if args.dataset == "sample":
        sample = pipeline.load_sample()
        stack = pipeline.AnnotatedStack(sample.volume.data, sample.labels, name="ct_sample")
        return [stack], sample.classes
    folder = args.data_root / args.dataset
    stacks = stacks_data.load_pool(stacks_data.stack_pairs(folder, args.split), None)
    stacks = stacks[: args.stacks] if args.stacks else stacks
    if args.class_names:
        classes = ClassTable.from_names(common.csv_list(args.class_names))
    else:
        top = max(int(np.max(s.labels)) for s in stacks)
        classes = ClassTable.default(top + 1)
    return stacks, classes


def run_seed(seed: int, stacks, classes, args, result_file: Path) -> None:
    """Initial training for ``seed`` and every strategy's loop from it."""
    preset = PRESETS[args.preset]
    initial = [
        np.asarray(pipeline.plan_slices(len(s.image), SamplingConfig(seed=seed)).train)
        for s in stacks
    ]
    model_cfg = pipeline.model_for_preset(args.model, classes.num_values, preset)
    training = preset.train.replace(device="cpu", seed=seed)  # the preset's step budget
    if args.initial_epochs:  # or an epoch count, as the first runs of this benchmark
        training = training.replace(epochs=args.initial_epochs, steps=0, steps_per_slice=0)
    preprocess = pipeline.default_preprocess(stacks[0].image, preset.preprocess)
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    cached = None
    if args.cache:
        split = "" if args.split == "Val" else f"_{args.split}"  # Val: the names of before
        stem = f"initial_{args.dataset}{split}_{len(stacks)}stacks_{args.model}_{args.preset}"
        cached = args.cache / f"{stem}_e{args.initial_epochs}_seed{seed}.numsnet.pt"
    from_cache = cached is not None and cached.exists()
    if from_cache:
        first = load_checkpoint(cached)
        initial_cpu = float(first.record["initial_cpu_seconds"])
    else:
        first = pipeline.train(
            [
                pipeline.AnnotatedStack(s.image, s.labels, a, (), s.name)
                for s, a in zip(stacks, initial, strict=True)
            ],
            model_cfg,
            training,
            preprocess,
            classes,
        )
        initial_cpu = time.process_time() - cpu0
        if cached is not None:
            first.record["initial_cpu_seconds"] = initial_cpu
            save_checkpoint(first, cached)
    print(
        f"seed {seed}: initial training {time.perf_counter() - wall0:.0f} s on "
        f"{sum(map(len, initial))} slices",
        flush=True,
    )
    for strategy in common.csv_list(args.strategies):
        result = run_strategy(strategy, first, stacks, initial, classes, args, seed, initial_cpu)
        record = {
            "dataset": args.dataset,
            "seed": seed,
            "model": args.model,
            "preset": args.preset,
            "stacks": len(stacks),
            "slices": int(sum(len(s.image) for s in stacks)),
            "initial_slices": int(sum(map(len, initial))),
            "initial_epochs": args.initial_epochs,
            "initial_steps": first.record.get("steps_done"),
            "initial_cpu_minutes": initial_cpu / 60.0,
            "budget_steps": args.budget_steps,
            "retrain_lr_factor": args.retrain_lr_factor,
            "initial_from_cache": from_cache,
            "batch_size": training.batch_size,
            "rounds": args.rounds,
            "machine": common.machine("cpu"),
            **result,
        }
        common.append_result(result_file, record)


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="acdc", help="sub-folder of the data root, or sample")
    parser.add_argument("--split", default="Val", help="imagesX/labelsX suffix")
    parser.add_argument("--stacks", type=int, default=None, help="first N stacks (sorted)")
    parser.add_argument("--class-names", default=None, help="comma list, background first")
    parser.add_argument("--model", default="drsegunet")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument(
        "--initial-epochs", type=int, default=0, help="0: the preset's step budget, as users get"
    )
    parser.add_argument("--budget-steps", type=int, default=30, help="steps per retrain")
    parser.add_argument(
        "--retrain-lr-factor",
        type=float,
        default=RETRAIN_LR_FACTOR,
        help="a retrain's learning rate as a fraction of the run's peak",
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="folder to keep and reuse the initial models"
    )
    parser.add_argument("--rounds", type=int, default=4, help="corrected slices per stack")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--name", default=None, help="results stem (default loop_<dataset>)")
    parser.add_argument("--summary", action="store_true", help="only write tables and plots")
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    stem = args.name or f"loop_{args.dataset}"
    result_file = args.out / f"{stem}.jsonl"
    if args.summary:
        records = common.read_results(result_file)
        text = loop_report.summarize(records)
        (args.out / f"{stem}.md").write_text(text + "\n")
        loop_report.plot(records, args.out / f"{stem}.png", stem)
        print(text)
        return 0
    if args.dataset == "acdc" and args.class_names is None:
        args.class_names = ",".join(stacks_data.ACDC_CLASSES)
    stacks, classes = load_stacks(args)
    print(f"{len(stacks)} stacks, {sum(len(s.image) for s in stacks)} slices", flush=True)
    for seed in common.int_list(args.seeds):
        run_seed(seed, stacks, classes, args, result_file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
