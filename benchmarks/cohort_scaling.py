"""Cohort prediction throughput against the number of worker processes.

Predicts every stack of a folder (default: the 20 ACDC validation stacks) with
``napari_numsnet.workflows.cohort.predict_cohort`` ``--reps`` times per worker count (the
counts interleaved, the order rotating), each time into a fresh output folder, and records
the wall time (median and range), slices/s, the speed-up over the first worker count
(median and range of the per-round ratios) and the time of a restart that finds every
stack done. The network is untrained: the time of a prediction does not depend on the weights.

    python3 benchmarks/cohort_scaling.py --workers 1,2 --device cpu
    python3 benchmarks/cohort_scaling.py --workers 1,2,4,8 --device cuda   # one per GPU
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import common


def _checkpoint(model: str, preset_name: str, size: int | None, scale: float | None, folder):
    from napari_numsnet import pipeline
    from napari_numsnet.engine.checkpoint import Checkpoint, save_checkpoint
    from napari_numsnet.models import create_model, scaled_widths
    from napari_numsnet.presets import get_preset

    preset = get_preset(preset_name)
    config = pipeline.model_for_preset(model, 4, preset)
    if scale is not None:
        config = config.replace(widths=scaled_widths(model, scale))
    preprocess = preset.preprocess if size is None else preset.preprocess.replace(size=size)
    checkpoint = Checkpoint.from_model(
        create_model(config), preprocess=preprocess, class_names=["background", "a", "b", "c"]
    )
    return save_checkpoint(checkpoint, Path(folder) / "cohort.numsnet.pt"), config


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2")
    parser.add_argument("--stacks", type=Path, help="folder of stacks (default acdc/imagesVal)")
    parser.add_argument("--limit", type=int, help="only the first N stacks")
    parser.add_argument("--model", default="drsegunet")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--size", type=int, help="slice side (default: the preset's)")
    parser.add_argument("--width-scale", type=float, help="widths x this (default: preset)")
    parser.add_argument("--name", default="cohort_scaling")
    parser.add_argument("--reps", type=int, default=3, help="rounds of every worker count")
    args = parser.parse_args(argv)

    from napari_numsnet import pipeline
    from napari_numsnet.config import PredictConfig
    from napari_numsnet.io.volume import read_volume
    from napari_numsnet.workflows import cohort

    folder = args.stacks or args.data_root / "acdc" / "imagesVal"
    files = pipeline.stack_files([folder])[: args.limit]
    slices = sum(read_volume(f).data.shape[0] for f in files)
    work = Path(tempfile.mkdtemp(prefix="cohort-bench-"))
    try:
        inputs = work / "inputs"
        inputs.mkdir()
        for f in files:
            shutil.copy(f, inputs / f.name)
        ckpt, config = _checkpoint(args.model, args.preset, args.size, args.width_scale, work)
        counts = common.int_list(args.workers)
        seconds_of: dict[int, list[float]] = {w: [] for w in counts}
        restarts: dict[int, list[float]] = {w: [] for w in counts}
        for rep in range(args.reps):  # the worker counts interleaved, the order rotating
            for workers in counts[rep % len(counts) :] + counts[: rep % len(counts)]:
                out = work / f"out-{workers}-{rep}"
                start = time.perf_counter()
                summary = cohort.predict_cohort(
                    ckpt, [inputs], out, PredictConfig(device=args.device), workers=workers
                )
                seconds_of[workers].append(time.perf_counter() - start)
                if summary.done != len(files):
                    print(f"{workers} worker(s): {summary.failed} failed", file=sys.stderr)
                    return 1
                start = time.perf_counter()
                again = cohort.predict_cohort(
                    ckpt, [inputs], out, PredictConfig(device=args.device), workers=workers
                )
                restarts[workers].append(time.perf_counter() - start)
                assert again.skipped == len(files)
        load = common.load_average()
        for workers in counts:
            stats = common.median_range(seconds_of[workers])
            first = seconds_of[counts[0]]
            ratios = [b / s for b, s in zip(first, seconds_of[workers], strict=True)]
            record = {
                "model": args.model,
                "widths": list(config.widths or []),
                "preset": args.preset,
                "device": args.device,
                "workers": workers,
                "stacks": len(files),
                "slices": slices,
                "rounds": args.reps,
                "seconds": stats,
                "seconds_median": round(stats["median"], 2),
                "slices_per_second": slices / stats["median"],
                "speedup": common.median_range(ratios),
                "restart_seconds": common.median_range(restarts[workers]),
                "load_after": load,
                "machine": common.machine(args.device),
            }
            common.append_result(args.out / f"{args.name}.jsonl", record)
            print(
                f"{workers} worker(s): {len(files)} stacks, {slices} slices in "
                f"{common.fmt_range(stats, 1)} s ({slices / stats['median']:.1f} slices/s), "
                f"x{common.fmt_range(record['speedup'])} against {counts[0]} worker(s); "
                f"restart with all done: {common.fmt_range(record['restart_seconds'])} s"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
