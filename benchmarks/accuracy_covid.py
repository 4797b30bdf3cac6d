"""COVID-19 slices: train on the 50 training slices, score the 48 test slices.

The Inf-Net split of the MedSeg 100-slice set (``covid_medseg100/``): 8-bit JPG slices of
about 270-375 px, RGB ground truth (128, 0, 0) = ground-glass opacity, (0, 128, 0) =
consolidation. Every slice is its own one-slice stack (the slices are not contiguous, so
nothing is carried between them); the model sees it at the preset's size and the
prediction is resized back. Reported: Dice, IoU, precision, recall pooled over the
test voxels, and the mean Dice over test slices (the way the Inf-Net paper reports it;
a slice where a class is absent from both maps is left out).

    python benchmarks/accuracy_covid.py --models unetpp,unet,drsegunet --seeds 0,1,2

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
from napari_numsnet.config import PRESETS, PredictConfig
from napari_numsnet.engine.metrics import SegmentationMetrics, dice_per_class
from napari_numsnet.io.classes import ClassTable

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


def score(checkpoint, test: list[pipeline.AnnotatedStack], device: str) -> dict[str, Any]:
    """Pooled metrics and per-slice mean Dice of ``checkpoint`` on ``test``."""
    classes = ClassTable.from_names(CLASSES)
    pooled = SegmentationMetrics(classes.num_values, classes.names)
    per_slice = []
    start = time.perf_counter()
    for stack in test:
        pred = pipeline.predict(checkpoint, stack.image, PredictConfig(device=device)).labels
        pooled.update(pred, stack.labels)
        per_slice.append(dice_per_class(pred, stack.labels, classes.num_values))
    seconds = time.perf_counter() - start
    per = np.asarray(per_slice, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # background: all NaN
        slice_mean = {name: float(np.nanmean(per[:, v])) for v, name in enumerate(CLASSES)}
    return {"scores": pooled.summary(), "slice_mean_dice": slice_mean, "predict_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="covid_medseg100")
    parser.add_argument("--models", default="unetpp,unet,drsegunet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=None, help="override the preset's size")
    parser.add_argument("--limit", type=int, default=None, help="first N slices of each split")
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
            model = pipeline.model_for_preset(name, classes.num_values, preset)
            training = preset.train.replace(device=args.device, seed=seed, epochs=args.epochs)
            start = time.perf_counter()
            checkpoint = pipeline.train(train_set, model, training, preprocess, classes)
            record = {
                "model": name,
                "seed": seed,
                "preset": preset.name,
                "epochs": training.epochs,
                "batch_size": training.batch_size,
                "size": preprocess.size,
                "widths": list(checkpoint.model_config.widths),
                "train_slices": len(train_set),
                "test_slices": len(test_set),
                "train_seconds": time.perf_counter() - start,
            }
            record.update(score(checkpoint, test_set, args.device))
            record["machine"] = common.machine(args.device)
            common.append_result(args.out / "accuracy_covid.jsonl", record)
            print(
                f"{name} seed {seed}: ground-glass Dice "
                f"{record['scores']['ground-glass']['dice']:.3f} (pooled), "
                f"{record['slice_mean_dice']['ground-glass']:.3f} (slice mean); consolidation "
                f"{record['scores']['consolidation']['dice']:.3f}; "
                f"train {record['train_seconds']:.0f} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
