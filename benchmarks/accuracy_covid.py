"""COVID-19 slices: train on the 50 training slices, score the 48 test slices.

The Inf-Net split of the MedSeg 100-slice set (``covid_medseg100/``): 8-bit JPG slices of
about 270-375 px, RGB ground truth (128, 0, 0) = ground-glass opacity, (0, 128, 0) =
consolidation. Every slice is its own one-slice stack (the slices are not contiguous, so
nothing is carried between them); the model sees it at the preset's size and the
prediction is resized back. Reported: Dice, IoU, precision, recall pooled over the
test voxels, and the mean Dice over test slices (the way the Inf-Net paper reports it;
a slice where a class is absent from both maps is left out).

    python benchmarks/accuracy_covid.py --models unetpp,unet,drsegunet --seeds 0,1,2

``cascade:REGION+INNER`` (e.g. ``cascade:raiunet+raiunet``, CHS-Net) trains the two-stage
cascade of ``napari_numsnet.workflows.cascade``: stage 1 segments a region, stage 2 the classes
inside it. The data has no lung labels, so the region is the infection (ground-glass or
consolidation) and stage 2 separates ground-glass from consolidation inside it. Every
record also scores the infection (ground-glass and consolidation as one class).

Results: ``<out>/accuracy_covid.jsonl``.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from skimage import io as skio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from napari_numsnet import pipeline
from napari_numsnet.config import PredictConfig
from napari_numsnet.engine.metrics import SegmentationMetrics, dice_per_class
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.presets import PRESETS
from napari_numsnet.workflows.cascade import Cascade, train_cascade

CLASSES = ("background", "ground-glass", "consolidation")
#: RGB colour of each label value in the ground truth.
COLOURS = {1: (128, 0, 0), 2: (0, 128, 0)}
TRAIN = "TrainingSet/MultiClassInfection-Train"
TEST = "TestingSet/MultiClassInfection-Test"


def rgb_to_labels(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` ground-truth colours -> ``(H, W) uint8`` labels 0, 1, 2."""
    labels = np.zeros(rgb.shape[:2], dtype=np.uint8)
    for value, colour in COLOURS.items():
        labels[np.all(rgb[..., :3] == colour, axis=-1)] = value
    return labels


def load_split(folder: Path, limit: int | None = None) -> list[pipeline.AnnotatedStack]:
    """Every slice of ``folder/Imgs`` with its ``GT`` as a one-slice stack ``(1, H, W)``."""
    images = sorted((folder / "Imgs").glob("*.jpg"), key=lambda p: int(p.stem))[:limit]
    stacks = []
    for path in images:
        image = skio.imread(path).astype(np.float32)
        labels = rgb_to_labels(skio.imread(folder / "GT" / f"{path.stem}.png"))
        stacks.append(pipeline.AnnotatedStack(image[None], labels[None], [0], (), name=path.name))
    return stacks


#: Prefix of the two-stage cascade rows: ``cascade:REGION+INNER``.
CASCADE = "cascade:"


def cascade_models(name: str) -> tuple[str, str] | None:
    """``cascade:raiunet+unetpp`` -> ``("raiunet", "unetpp")``; ``None`` for one model."""
    if not name.startswith(CASCADE):
        return None
    region, _, inner = name[len(CASCADE) :].partition("+")
    if not region or not inner:
        raise SystemExit(f"{name}: write a cascade as cascade:REGION+INNER")
    return region, inner


def predict_labels(predictor, image: np.ndarray, device: str) -> np.ndarray:
    """Labels of ``image`` from a checkpoint or a :class:`Cascade`."""
    config = PredictConfig(device=device)
    if isinstance(predictor, Cascade):
        return predictor.predict(image, config).labels
    return pipeline.predict(predictor, image, config).labels


def score(predictor, test: list[pipeline.AnnotatedStack], device: str) -> dict[str, Any]:
    """Pooled metrics and per-slice mean Dice of ``predictor`` on ``test``.

    ``infection`` scores ground-glass and consolidation together (label > 0).
    """
    classes = ClassTable.from_names(CLASSES)
    pooled = SegmentationMetrics(classes.num_values, classes.names)
    infection = SegmentationMetrics(2, ("background", "infection"))
    per_slice, per_slice_infection = [], []
    start = time.perf_counter()
    for stack in test:
        pred = predict_labels(predictor, stack.image, device)
        pooled.update(pred, stack.labels)
        per_slice.append(dice_per_class(pred, stack.labels, classes.num_values))
        pred_any, ref_any = (pred > 0).astype(np.uint8), (stack.labels > 0).astype(np.uint8)
        infection.update(pred_any, ref_any)
        per_slice_infection.append(dice_per_class(pred_any, ref_any, 2)[1])
    seconds = time.perf_counter() - start
    per = np.asarray(per_slice, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # background: all NaN
        slice_mean = {name: float(np.nanmean(per[:, v])) for v, name in enumerate(CLASSES)}
        slice_mean["infection"] = float(np.nanmean(np.asarray(per_slice_infection, float)))
    scores = pooled.summary()
    scores["infection"] = infection.summary()["infection"]
    return {"scores": scores, "slice_mean_dice": slice_mean, "predict_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="covid_medseg100")
    parser.add_argument("--models", default="unetpp,unet,drsegunet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument(
        "--epochs", type=int, default=0, help="epochs instead of the preset's step budget"
    )
    parser.add_argument("--size", type=int, default=None, help="override the preset's size")
    parser.add_argument("--limit", type=int, default=None, help="first N slices of each split")
    common.add_class_weights_argument(parser)
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    folder = args.data_root / args.dataset
    train_set = load_split(folder / TRAIN, args.limit)
    test_set = load_split(folder / TEST, args.limit)
    preset = PRESETS[args.preset]
    classes = ClassTable.from_names(CLASSES)
    preprocess = pipeline.default_preprocess(train_set[0].image, preset.preprocess)
    if args.size:
        preprocess = preprocess.replace(size=args.size)
    for seed in common.int_list(args.seeds):
        for name in common.csv_list(args.models):
            stages = cascade_models(name)
            training = preset.train.replace(device=args.device, seed=seed)
            if args.epochs:  # an epoch count replaces the preset's step budget
                training = training.replace(epochs=args.epochs, steps=0)
            if args.class_weights is not None:
                training = training.replace(class_weights=args.class_weights)
            start = time.perf_counter()
            if stages:
                region, inner = (
                    pipeline.model_for_preset(n, classes.num_values, preset) for n in stages
                )
                predictor = train_cascade(
                    train_set, region, inner, training, preprocess, classes, region_values=(1, 2)
                )
                checkpoint = predictor.inner
            else:
                model = pipeline.model_for_preset(name, classes.num_values, preset)
                checkpoint = predictor = pipeline.train(
                    train_set, model, training, preprocess, classes
                )
            record = {
                "model": name,
                "seed": seed,
                "preset": preset.name,
                "epochs": training.epochs,
                "steps": int(checkpoint.record.get("steps_done", 0)),
                "batch_size": training.batch_size,
                "class_weights": training.class_weights,
                "size": preprocess.size,
                "widths": list(checkpoint.model_config.widths),
                "train_slices": len(train_set),
                "test_slices": len(test_set),
                "train_seconds": time.perf_counter() - start,
            }
            if stages:
                record["region_values"] = [1, 2]
                record["region_widths"] = list(predictor.region.model_config.widths)
            record.update(score(predictor, test_set, args.device))
            record["machine"] = common.machine(args.device)
            common.append_result(args.out / "accuracy_covid.jsonl", record)
            print(
                f"{name} seed {seed}: ground-glass Dice "
                f"{record['scores']['ground-glass']['dice']:.3f} (pooled), "
                f"{record['slice_mean_dice']['ground-glass']:.3f} (slice mean); consolidation "
                f"{record['scores']['consolidation']['dice']:.3f}; infection "
                f"{record['scores']['infection']['dice']:.3f}; "
                f"train {record['train_seconds']:.0f} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
