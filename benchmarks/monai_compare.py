"""Our UNet++ against MONAI's ``BasicUNetPlusPlus``, side by side in one run.

MONAI's ``features`` has six entries: five encoder widths (``conv_0_0`` .. ``conv_4_0``)
and the width of the last top-row node ``X(0,4)``. Our UNet++ (paper widths
``(32, 64, 128, 256, 512)``, output node ``X(1,5)`` of width 32) maps to
``features=(32, 64, 128, 256, 512, 32)``; MONAI's default
``(32, 32, 64, 128, 256, 32)`` is a narrower network (its second level has 32 filters,
not 64) and is measured too. To match our blocks the MONAI model gets ReLU, BatchNorm,
no dropout and transposed-convolution up-sampling (``upsample="deconv"``). Remaining
differences, inherent to MONAI's block: BatchNorm in every node (ours: encoder only)
placed before the activation, and the top-row nodes up-sample without halving the
channels (``halves=False``), which makes them slightly wider than ours.

The three networks are timed in turns in one process (``--reps`` rounds, the order
rotating, each round ``--iters`` inference batches and ``--train-iters`` training steps of
each): every round gives a ratio to ours measured under the same load; the table shows
the median and range of those ratios and the load average before and after.

    python benchmarks/monai_compare.py --sizes 256 --threads 1 --reps 5

Results: ``<out>/monai_compare.jsonl``; skipped, with the reason, when MONAI is absent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import speed
import speed_tables

from napari_numsnet.models import keras_parameter_count

#: MONAI feature tuples: the one matching our UNet++ and MONAI's default.
MONAI_FEATURES = {
    "monai_matched": (32, 64, 128, 256, 512, 32),
    "monai_default": (32, 32, 64, 128, 256, 32),
}


def monai_available() -> bool:
    """Whether MONAI can be imported."""
    try:
        import monai  # noqa: F401
    except ImportError:
        return False
    return True


def monai_unetpp(features: tuple[int, ...], num_classes: int = speed.NUM_CLASSES):
    """MONAI's 2D ``BasicUNetPlusPlus`` configured like our UNet++."""
    from monai.networks.nets import BasicUNetPlusPlus

    return BasicUNetPlusPlus(
        spatial_dims=2,
        in_channels=1,
        out_channels=num_classes,
        features=features,
        deep_supervision=False,
        act=("ReLU", {"inplace": True}),
        norm="batch",
        dropout=0.0,
        upsample="deconv",
    )


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2, help="inference batches per round")
    parser.add_argument("--train-iters", type=int, default=2, help="training steps per round")
    parser.add_argument("--reps", type=int, default=5, help="timed rounds (median, range)")
    parser.add_argument("--variant", default="fp32")
    args = parser.parse_args(argv)
    if not monai_available():
        print("MONAI is not installed: comparison skipped (pip install monai to run it).")
        return 0
    import monai

    common.set_threads(args.threads)
    device = torch.device(args.device)
    info = common.machine(str(device))
    info["monai"] = monai.__version__
    factories = {"ours_unetpp": lambda: speed.build("unetpp", "paper")}
    for key, features in MONAI_FEATURES.items():
        factories[key] = lambda f=features: monai_unetpp(f)
    rows = []
    for size in common.int_list(args.sizes):
        records, prepared = {}, {}
        for key, factory in factories.items():
            forward, train = speed.count_flops(factory, size)
            records[key] = {
                "model": key,
                "features": list(MONAI_FEATURES.get(key, (32, 64, 128, 256, 512))),
                "size": size,
                "batch": args.batch,
                "device": str(device),
                "variant": args.variant,
                "params": keras_parameter_count(factory()),
                "flops_forward": forward,
                "flops_train": train,
            }
            prepared[key] = speed.prepare(factory, size, args.batch, device, args.variant)
        # Both sides in turns, in one process: the ratios are measured under the same load.
        timings = speed.measure_interleaved(
            prepared, args.reps, args.iters, dict.fromkeys(prepared, args.train_iters), args.warmup
        )
        base = timings["ours_unetpp"]
        for key, record in records.items():
            record.update(timings[key])
            for phase in ("infer", "train"):
                if f"{phase}_slices_per_s" in record:
                    record[f"{phase}_ratio_to_ours"] = (
                        record[f"{phase}_slices_per_s"] / base[f"{phase}_slices_per_s"]
                    )
                    # Ratio of each round's pair, measured back to back: median and range.
                    pairs = [
                        a / b
                        for a, b in zip(
                            record[f"{phase}_slices_per_s_rounds"],
                            base[f"{phase}_slices_per_s_rounds"],
                            strict=True,
                        )
                    ]
                    record[f"{phase}_ratio_rounds"] = pairs
            record["machine"] = info
            common.append_result(args.out / "monai_compare.jsonl", record)
            rows.append(record)
            print(
                f"{size}px {key}: {record['params']:,} params, "
                f"{record['flops_forward'] / 1e9:.1f} GFLOP fwd, "
                f"infer {speed_tables.cell(record, 'infer')} sl/s "
                f"(x{record['infer_ratio_to_ours']:.2f}), "
                f"train {speed_tables.cell(record, 'train', 3)} sl/s "
                f"(x{record.get('train_ratio_to_ours', float('nan')):.2f}), "
                f"load {record['load_before']} -> {record['load_after']}",
                flush=True,
            )
    print(table(rows))
    return 0


def table(records: list[dict]) -> str:
    """Markdown table: slices/s and ratios to ours as median (range) of the rounds."""
    header = [
        "model",
        "features",
        "px",
        "params (M)",
        "GFLOP/slice fwd",
        "infer slices/s",
        "train slices/s",
        "infer: ours / this",
        "train: ours / this",
        "load (1 min) before-after",
    ]
    rows = [
        [
            r["model"],
            str(tuple(r["features"])),
            r["size"],
            f"{r['params'] / 1e6:.2f}",
            f"{r['flops_forward'] / 1e9:.1f}",
            speed_tables.cell(r, "infer"),
            speed_tables.cell(r, "train", 3),
            _inverse_cell(r, "infer"),
            _inverse_cell(r, "train"),
            f"{r['load_before'][0]:.1f}-{r['load_after'][0]:.1f}" if r["load_before"] else "?",
        ]
        for r in records
    ]
    return common.markdown_table(header, rows)


def _inverse_cell(record: dict, phase: str) -> str:
    """How many times faster ours ran, per round pair: median (range)."""
    pairs = record.get(f"{phase}_ratio_rounds")
    if not pairs:
        return "n/a"
    return common.fmt_range(common.median_range([1.0 / p for p in pairs]))


if __name__ == "__main__":
    raise SystemExit(main())
