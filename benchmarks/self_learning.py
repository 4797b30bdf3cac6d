"""The self-learning loop: k-means pseudo-labels, level 1, level 2 against references.

Two stacks with reference labels:

* ``ct``: the shipped CT sample (HU). The loop's classes 1..k together are its lung
  segmentation; the reference is the sample's ``lungs`` label (value 4). Reported:
  lung Dice, precision, recall of every level.
* ``covid``: the 48 COVID-19 test slices (8-bit, not HU), resized to ``--covid-size``
  and stacked. Class 2 of the loop is ground-glass and class 3 consolidation (thesis
  4.4.1); reported: their Dice against the reference, and the infection (2 or 3) Dice.

    python benchmarks/self_learning.py --stacks ct,covid --seeds 0,1,2

Each level trains as the plugin's Self-learning panel does: the chosen preset's recipe
and step budget with the thesis' learning rate (9.8e-4), the classes weighted by their
frequency (``SelfLearningConfig.class_weights``); ``--epochs 20`` trains the thesis'
epoch count instead, ``--steps`` a fixed budget, ``--class-weights none`` unweighted.
Levels 2+ run as many steps as level 1 ran (``--fine-tune-steps`` another number).

Results: ``<out>/self_learning.jsonl``, one line per (stack, seed, level); a stack on
which the k-means step fails is recorded with the error.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from skimage.transform import resize

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy_covid
import common

from napari_numsnet import pipeline
from napari_numsnet.engine.class_weights import CLASS_WEIGHTINGS
from napari_numsnet.errors import NumsnetError
from napari_numsnet.presets import PRESETS
from napari_numsnet.pseudolabel.records import KMeansConfig
from napari_numsnet.workflows.selflearn import SelfLearningConfig, self_learning


def overlap(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Dice, precision and recall of boolean ``pred`` against boolean ``ref``."""
    tp = float(np.logical_and(pred, ref).sum())
    fp = float(np.logical_and(pred, ~ref).sum())
    fn = float(np.logical_and(~pred, ref).sum())

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
    }


def ct_stack() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The CT sample ``(30, 122, 101)`` HU and its reference lungs."""
    sample = pipeline.load_sample()
    lungs = sample.classes.names.index("lungs")
    return sample.volume.data, {"lung": sample.labels == lungs}


def covid_stack(data_root: Path, size: int, limit: int | None) -> tuple[np.ndarray, dict]:
    """The COVID test slices resized to ``(Z, size, size)`` and their references."""
    folder = data_root / "covid_medseg100" / accuracy_covid.TEST
    stacks = accuracy_covid.load_split(folder, limit)
    images = np.stack(
        [resize(s.image[0], (size, size), order=1, preserve_range=True) for s in stacks]
    ).astype(np.float32)
    labels = np.stack(
        [
            resize(s.labels[0], (size, size), order=0, preserve_range=True, anti_aliasing=False)
            for s in stacks
        ]
    ).astype(np.uint8)
    return images, {
        "ground-glass": labels == 1,
        "consolidation": labels == 2,
        "infection": labels > 0,
    }


def level_scores(labels: np.ndarray, refs: dict[str, np.ndarray]) -> dict[str, dict]:
    """Scores of one level's labels against the references of its stack."""
    if "lung" in refs:
        return {"lung": overlap(labels > 0, refs["lung"])}
    return {
        "ground-glass": overlap(labels == 2, refs["ground-glass"]),
        "consolidation": overlap(labels == 3, refs["consolidation"]),
        "infection": overlap(labels >= 2, refs["infection"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--stacks", default="ct,covid")
    parser.add_argument("--model", default="drsegunet", help="the thesis trains DRSegUNet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="an epoch count per level (the thesis: 20) instead of the preset's step budget",
    )
    parser.add_argument(
        "--steps", type=int, default=0, help="a fixed step budget per level instead"
    )
    parser.add_argument(
        "--fine-tune-steps",
        type=int,
        default=None,
        help="steps of levels 2+ (default: as many as level 1 ran, as the panel trains)",
    )
    parser.add_argument(
        "--class-weights",
        choices=CLASS_WEIGHTINGS,
        default=SelfLearningConfig().class_weights,
        help="the cross-entropy's class weighting of every level",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=9.8e-4, help="level 1's (the thesis' 9.8e-4)"
    )
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--covid-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=None, help="override the preset's size")
    parser.add_argument(
        "--no-guard",
        action="store_true",
        help="switch the collapse guard off, so that level 2 runs after a collapsed level 1",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N COVID slices")
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    preset = PRESETS[args.preset]
    out = args.out / "self_learning.jsonl"
    for stack_name in common.csv_list(args.stacks):
        if stack_name == "ct":
            image, refs = ct_stack()
        else:
            image, refs = covid_stack(args.data_root, args.covid_size, args.limit)
        for seed in common.int_list(args.seeds):
            kmeans = KMeansConfig(seed=seed)
            model = pipeline.model_for_preset(args.model, kmeans.k + 1, preset)
            training = preset.train.replace(
                device=args.device, seed=seed, learning_rate=args.learning_rate
            )
            if args.steps:
                training = training.replace(steps=args.steps, steps_per_slice=0)
            elif args.epochs:
                training = training.replace(epochs=args.epochs, steps=0, steps_per_slice=0)
            config = SelfLearningConfig(
                levels=args.levels,
                class_weights=args.class_weights,
                fine_tune_steps=args.fine_tune_steps,
            )
            if args.no_guard:  # only classes above 49% of the lung watched, at 1e-9 of it
                config = dataclasses.replace(config, min_class_fraction=0.49, collapse_ratio=1e-9)
            preprocess = pipeline.default_preprocess(image, preset.preprocess)
            if args.size:
                preprocess = preprocess.replace(size=args.size)
            base: dict[str, Any] = {
                "stack": stack_name,
                "shape": list(image.shape),
                "seed": seed,
                "model": args.model,
                "preset": preset.name,
                "epochs": args.epochs,
                "steps": args.steps,
                "fine_tune_steps": args.fine_tune_steps,
                "learning_rate": args.learning_rate,
                "class_weights": args.class_weights,
                "guard": not args.no_guard,
                "machine": common.machine(args.device),
            }
            start = time.perf_counter()
            try:
                result = self_learning(
                    image, model, training, kmeans, config, preprocess=preprocess
                )
            except NumsnetError as error:
                common.append_result(out, {**base, "error": str(error)})
                print(f"{stack_name} seed {seed}: {error}", flush=True)
                continue
            seconds = time.perf_counter() - start
            for level in result.levels:
                record = {
                    **base,
                    "level": level.level,
                    "collapsed": level.collapsed,
                    "reason": level.reason,
                    "scores": level_scores(level.labels, refs),
                    "class_fractions": level.class_fractions,
                    "train_seconds": (
                        level.checkpoint.record.get("seconds") if level.checkpoint else 0.0
                    ),
                    "train_steps": (
                        level.checkpoint.record.get("steps_done") if level.checkpoint else 0
                    ),
                    "loop_seconds": seconds,
                    "notes": result.notes,
                }
                common.append_result(out, record)
                first = next(iter(record["scores"]))
                print(
                    f"{stack_name} seed {seed} level {level.level}: {first} Dice "
                    f"{record['scores'][first]['dice']:.3f}"
                    + (f" (collapsed: {level.reason})" if level.collapsed else ""),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
