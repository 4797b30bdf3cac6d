"""Each inference head of a model, and UNet#'s classification guide, on the CT sample.

Trains a model with ``numsnet demo``'s protocol (the preset, 10% of the slices planned
by the default planner, one validation slice; :func:`pipeline.annotate_train_predict`),
then predicts the whole stack once per inference head the model declares
(``inference_heads``: UNet#'s X(0,k), UNet++ with deep supervision), with the heads
averaged as the model predicts by default, and, for UNet#, without the
classification-guided module's suppression. Dice per class on the slices it never saw
and on the slices it trained on: a class that scores 0 on its own training slice was
not learned, whatever the choice of head.

    python benchmarks/heads.py --model unetsharp --seeds 0

Results: ``<out>/heads.jsonl``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from first_prediction import run_protocol

from napari_numsnet import pipeline
from napari_numsnet.config import PredictConfig
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.engine.predict import predict_volume
from napari_numsnet.models.unetsharp import UNetSharp
from napari_numsnet.presets import PRESETS
from napari_numsnet.workflows.prediction import with_checkpoint_defaults


def dice(labels: np.ndarray, reference: np.ndarray, classes, slices) -> dict[str, float]:
    """Dice per foreground class on ``slices``."""
    scores = pipeline.evaluate(labels, reference, classes, slices)
    return {k: round(v["dice"], 4) for k, v in scores.items() if k != "background"}


def predicted(
    checkpoint: Checkpoint, image: np.ndarray, head: int | None, guided: bool, device: str
) -> np.ndarray:
    """The whole stack's labels with inference head ``head`` (None: the model's default)
    and, for UNet#, with or without the classification guide."""
    model = checkpoint.build_model()
    model.set_inference_head(head)
    if isinstance(model, UNetSharp) and not guided:
        model.guide = None  # what classification_guided=False builds
    config = with_checkpoint_defaults(PredictConfig(device=device), checkpoint)
    prediction = predict_volume(
        model, image, checkpoint.preprocess, config, return_probabilities=False
    )
    return prediction.labels


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default="unetsharp")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, help="a fixed step budget instead of the preset's")
    parser.add_argument("--size", type=int, help="slice size in px instead of the preset's")
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    preset = PRESETS[args.preset]
    sample = pipeline.load_sample()
    image, reference, classes = sample.volume.data, sample.labels, sample.classes
    for seed in common.int_list(args.seeds):
        model = pipeline.model_for_preset(args.model, classes.num_values, preset)
        training = preset.train.replace(device=args.device, seed=seed)
        if args.steps:
            training = training.replace(steps=args.steps, steps_per_slice=0, min_steps=0)
        result, _ = run_protocol(sample, model, training, preset, seed, size=args.size)
        trained = [int(z) for z in result.split.train]
        built = result.checkpoint.build_model()
        heads: list[int | None] = [None, *built.inference_heads]
        variants = [(head, True) for head in heads]
        if isinstance(built, UNetSharp):
            variants.append((None, False))
        rows: list[dict[str, Any]] = []
        for head, guided in variants:
            labels = predicted(result.checkpoint, image, head, guided, args.device)
            rows.append(
                {
                    "head": head,
                    "guided": guided,
                    "unseen": dice(labels, reference, classes, result.unseen),
                    "trained": dice(labels, reference, classes, trained),
                }
            )
            print(
                f"{args.model} seed {seed}, head {head or 'default'}"
                f"{'' if guided else ', no guide'}: unseen {rows[-1]['unseen']}, "
                f"trained {rows[-1]['trained']}",
                flush=True,
            )
        record = {
            "model": args.model,
            "seed": seed,
            "steps": result.checkpoint.record.get("budget", {}).get("steps"),
            "size": result.checkpoint.preprocess.size,
            "annotated": trained,
            "rows": rows,
            "machine": common.machine(args.device),
        }
        common.append_result(args.out / "heads.jsonl", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
