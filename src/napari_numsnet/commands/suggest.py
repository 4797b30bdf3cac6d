"""``numsnet suggest``: which slices of a stack to correct next, ranked."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from napari_numsnet.config import PredictConfig
from napari_numsnet.errors import NumsnetError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``suggest`` on the ``numsnet`` sub-command parsers."""
    from napari_numsnet.commands.common import DefaultsHelpFormatter
    from napari_numsnet.engine.suggest import DEFAULT_SCORE, DEFAULT_WEIGHTING, SCORES

    p = sub.add_parser(
        "suggest",
        formatter_class=DefaultsHelpFormatter,
        help="rank the slices of a stack to correct next (most useful first)",
        description="Predict a stack with a checkpoint and rank its slices for correction "
        "by the prediction's own uncertainty; annotated slices are left out.",
    )
    p.add_argument("--checkpoint", required=True, help="trained checkpoint (.pt)")
    p.add_argument("--image", required=True, help="the stack (NIfTI, TIFF, ...)")
    p.add_argument(
        "--annotated",
        default=None,
        help="annotated slices to leave out, 0-based along the stack axis, e.g. '3,7,10-12'",
    )
    p.add_argument(
        "--labels",
        default=None,
        help="annotation file; its slices with any label are left out too",
    )
    p.add_argument("--score", default=DEFAULT_SCORE, choices=SCORES, help="uncertainty of a voxel")
    p.add_argument(
        "--weighting",
        default=DEFAULT_WEIGHTING,
        choices=("foreground", "sum"),
        help="a slice's score: the sum over its voxels, or weighted by the foreground",
    )
    p.add_argument("--top", type=int, default=10, help="slices to print (0: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--stack-axis", type=int, default=None, help="axis of the slices")
    p.add_argument("--device", default="auto", help="auto, cpu or a torch device")
    p.set_defaults(func=cmd_suggest)
    return p


def _annotated(args: argparse.Namespace, shape: tuple[int, ...], meta) -> list[int]:
    from napari_numsnet import options
    from napari_numsnet.commands.common import _parse_slices

    given = _parse_slices(args.annotated) or []
    options.check_slices("--annotated", given, shape[0], str(args.image))
    chosen = set(given)
    if args.labels:
        from napari_numsnet.io.labels import read_labels

        labels = read_labels(args.labels, like=meta)
        if labels.shape != shape:
            raise NumsnetError(
                f"The labels {args.labels} have shape {labels.shape}, the image {shape}.",
                "Give the annotations drawn on this image.",
            )
        chosen |= set(np.flatnonzero(labels.reshape(len(labels), -1).any(axis=1)).tolist())
    return sorted(int(i) for i in chosen)


def cmd_suggest(args: argparse.Namespace) -> int:
    """Print the ranking (a table, or JSON with ``--json``)."""
    from napari_numsnet.engine.checkpoint import Checkpoint
    from napari_numsnet.engine.suggest import predict_with_suggestion
    from napari_numsnet.io.volume import read_volume
    from napari_numsnet.workflows.cascade import load_predictor

    checkpoint = load_predictor(args.checkpoint)
    if not isinstance(checkpoint, Checkpoint):
        raise NumsnetError(
            "Suggestions need a single model; this checkpoint is a cascade.",
            "Give the checkpoint of one model.",
        )
    volume = read_volume(args.image, stack_axis=args.stack_axis)
    annotated = _annotated(args, volume.data.shape, volume.meta)
    start = time.perf_counter()
    _, suggestion = predict_with_suggestion(
        checkpoint.build_model(),
        volume.data,
        checkpoint.preprocess,
        annotated,
        args.score,
        args.weighting,
        PredictConfig(device=args.device, direction=checkpoint.direction),
    )
    seconds = time.perf_counter() - start
    top = None if args.top <= 0 else args.top
    if args.json:
        out = suggestion.to_dict(top)
        out.update(image=str(args.image), annotated=annotated, seconds=round(seconds, 3))
        print(json.dumps(out, indent=2))
        return 0
    unit = "fraction" if args.weighting == "foreground" else "voxels"
    print(
        f"{args.image}: {len(volume.data)} slices, {len(annotated)} annotated left out; "
        f"score {suggestion.method} ({unit}, higher = correct sooner), {seconds:.1f} s"
    )
    print(f"{'rank':>4}  {'slice':>5}  {'score':>8}")
    for rank, z in enumerate(suggestion.top(top), start=1):
        print(f"{rank:>4}  {z:>5}  {suggestion.scores[z]:>8.4f}")
    if not suggestion.top():
        print("every slice is annotated: nothing to suggest")
    return 0
