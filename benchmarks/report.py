"""Tables (markdown) and plots (PNG) from the JSON lines the benchmark scripts wrote.

    python benchmarks/report.py --out benchmarks/results

Writes ``<out>/tables.md`` and ``<out>/*.png``; a missing results file is skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import stacks_data
import stacks_tables

#: Published ground-glass Dice on the Inf-Net split (covid_medseg100 README).
PUBLISHED_COVID = [
    ("DeepLab-v3+ (stride 8 / 16)", "0.375 / 0.443"),
    ("FCN8s", "0.471"),
    ("Semi-Inf-Net + FCN8s", "0.646"),
    ("TV-UNet", "0.655"),
    ("DRSegUNet thesis (its own split)", "0.89"),
]


_order = common.order
_title = common.title


def acdc_section(records: list[dict[str, Any]], out: Path) -> str:
    """Tables of the stack benchmark and a Dice bar chart per model and class."""
    if not records:
        return ""
    names = list(stacks_data.ACDC_CLASSES)
    text = "### ACDC few-shot accuracy\n\n" + stacks_tables.summarize(records, names)
    _acdc_plot(records, names[1:], out / "acdc_dice.png")
    return text


def unetsharp_pruned_section(records: list[dict[str, Any]]) -> str:
    """UNet#'s accurate mode against its pruned heads, on the same trained weights."""
    table = stacks_tables.summarize_pruned(records, list(stacks_data.ACDC_CLASSES))
    return "### ACDC few-shot: UNet# pruned heads\n\n" + table if table else ""


def _acdc_plot(records: list[dict[str, Any]], classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["regime"], r["model"]), []).append(r)
    keys = sorted(groups, key=lambda k: (k[0] != "few", _order(k[1])))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(classes)
    for c, name in enumerate(classes):
        means, stds = [], []
        for key in keys:
            m, s, _ = common.mean_std(r["scores"][name]["dice"] for r in groups[key])
            means.append(m)
            stds.append(s)
        ax.bar(np.arange(len(keys)) + c * width, means, width, yerr=stds, label=name, capsize=2)
    labels = [_title(m) + ("\n(all slices)" if g == "all" else "") for g, m in keys]
    ax.set_xticks(
        np.arange(len(keys)) + width * (len(classes) - 1) / 2,
        labels,
        fontsize=8,
        rotation=30,
        ha="right",
    )
    ax.set_ylabel("Dice (mean ± std over seeds)")
    ax.set_ylim(0, 1)
    ax.set_title("ACDC validation stacks, trained on 10% of the slices (fast preset, CPU)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def covid_section(records: list[dict[str, Any]]) -> str:
    """Ground-glass and consolidation Dice beside the published numbers."""
    if not records:
        return ""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["model"], []).append(r)
    rows = []
    for model in sorted(groups, key=_order):
        runs = groups[model]
        rows.append(
            [
                _title(model),
                common.fmt(*common.mean_std(r["slice_mean_dice"]["ground-glass"] for r in runs)),
                common.fmt(*common.mean_std(r["scores"]["ground-glass"]["dice"] for r in runs)),
                common.fmt(*common.mean_std(r["slice_mean_dice"]["consolidation"] for r in runs)),
                common.fmt(*common.mean_std(r["scores"]["consolidation"]["dice"] for r in runs)),
                common.fmt(
                    *common.mean_std(r["scores"].get("infection", {}).get("dice") for r in runs)
                ),
                f"{np.mean([r['train_seconds'] for r in runs]) / 60:.1f}",
            ]
        )
    header = [
        "model",
        "ground-glass Dice (slice mean)",
        "ground-glass Dice (pooled)",
        "consolidation Dice (slice mean)",
        "consolidation Dice (pooled)",
        "infection Dice (pooled)",
        "train min/run",
    ]
    text = "### COVID-19 slices (Inf-Net split: 50 train, 48 test)\n\n"
    text += common.markdown_table(header, rows) + "\n\nPublished ground-glass Dice:\n\n"
    text += common.markdown_table(["method", "Dice"], PUBLISHED_COVID) + "\n\n"
    return text


def self_learning_section(records: list[dict[str, Any]]) -> str:
    """Dice of every level of the loop against the references."""
    if not records:
        return ""
    rows = []
    errors = [r for r in records if "error" in r]
    groups: dict[tuple[str, bool, int], list[dict[str, Any]]] = {}
    for r in records:
        if "error" not in r:
            groups.setdefault((r["stack"], not r.get("guard", True), r["level"]), []).append(r)
    for (stack, unguarded, level), runs in sorted(groups.items()):
        for target in runs[0]["scores"]:
            rows.append(
                [
                    stack,
                    "off" if unguarded else "on",
                    "k-means" if level == 0 else f"level {level}",
                    target,
                    common.fmt(*common.mean_std(r["scores"][target]["dice"] for r in runs)),
                    common.fmt(*common.mean_std(r["scores"][target]["precision"] for r in runs)),
                    common.fmt(*common.mean_std(r["scores"][target]["recall"] for r in runs)),
                    f"{sum(r['collapsed'] for r in runs)}/{len(runs)}",
                ]
            )
    header = [
        "stack",
        "collapse guard",
        "labels",
        "reference",
        "Dice",
        "precision",
        "recall",
        "collapsed",
    ]
    text = "### Self-learning loop\n\n" + common.markdown_table(header, rows) + "\n\n"
    for r in errors:
        text += f"- {r['stack']} seed {r['seed']}: {r['error']}\n"
    reasons = {r["reason"] for r in records if r.get("collapsed")}
    for reason in sorted(reasons):
        text += f"- collapse: {reason}\n"
    return text + "\n"


def speed_section(records: list[dict[str, Any]], out: Path, name: str) -> str:
    """Throughput, memory and FLOPs per model and size (and variant on CUDA)."""
    failed = [r for r in records if "error" in r]
    records = [r for r in records if "error" not in r]
    if not records:
        return ""
    rows = []
    for r in sorted(records, key=lambda r: (r["widths"], r["size"], _order(r["model"]))):
        label = _title(r["model"])
        if "depth" in r:
            label += f" (3D, {r['depth']}-slice sub-volume)"
        peak = f"{r.get('train_peak_bytes', r['infer_peak_bytes']) / 2**20:.0f}"
        if "train_slices_per_s" not in r:
            peak += " (infer)"
        row = [
            label,
            r["widths"],
            r["size"],
            r["variant"],
            f"{r['params'] / 1e6:.2f}",
            f"{r['flops_forward'] / 1e9:.1f}",
            f"{r['infer_slices_per_s']:.2f}",
            f"{r['train_slices_per_s']:.3f}" if "train_slices_per_s" in r else "n/a",
            peak,
            f"{r['infer_slices_per_s'] * r['flops_forward'] / 1e9:.1f}",
        ]
        if "infer_mfu" in r:
            row.append(f"{r['infer_mfu']:.1%} / {r.get('train_mfu', float('nan')):.1%}")
        rows.append(row)
    header = [
        "model",
        "widths",
        "px",
        "variant",
        "params (M)",
        "GFLOP/slice fwd",
        "infer slices/s",
        "train slices/s",
        "peak MiB (train)",
        "achieved GFLOP/s (infer)",
    ]
    if any("infer_mfu" in r for r in records):
        header.append("MFU infer / train")
    _speed_plot(records, out / f"{name}_throughput.png")
    notes = "".join(
        f"- {r['model']} {r['size']} px {r['variant']}: failed, {r['error']}\n" for r in failed
    )
    return f"### Speed ({name})\n\n" + common.markdown_table(header, rows) + "\n\n" + notes


def _speed_plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if r["variant"] == records[0]["variant"]]
    sizes = sorted({r["size"] for r in records})
    models = sorted({r["model"] for r in records}, key=_order)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, title in zip(
        axes, ("infer_slices_per_s", "train_slices_per_s"), ("inference", "training"), strict=True
    ):
        width = 0.8 / len(sizes)
        for k, size in enumerate(sizes):
            values = [
                next(
                    (r.get(key, np.nan) for r in records if r["model"] == m and r["size"] == size),
                    np.nan,
                )
                for m in models
            ]
            ax.bar(np.arange(len(models)) + k * width, values, width, label=f"{size} px")
        ax.set_xticks(
            np.arange(len(models)) + width * (len(sizes) - 1) / 2,
            [_title(m) for m in models],
            fontsize=8,
            rotation=40,
            ha="right",
        )
        ax.set_yscale("log")
        ax.set_ylabel("slices / s")
        ax.set_title(f"{title}, batch {records[0]['batch']}, {records[0]['device']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def monai_section(records: list[dict[str, Any]]) -> str:
    """Our UNet++ against MONAI's BasicUNetPlusPlus."""
    if not records:
        return ""
    rows = [
        [
            r["model"],
            str(tuple(r["features"])),
            r["size"],
            f"{r['params'] / 1e6:.2f}",
            f"{r['flops_forward'] / 1e9:.1f}",
            f"{r['infer_slices_per_s']:.2f}",
            f"{r.get('train_slices_per_s', float('nan')):.3f}",
            f"{r['infer_ratio_to_ours']:.2f}",
            f"{r.get('train_ratio_to_ours', float('nan')):.2f}",
            f"{r.get('train_peak_bytes', r['infer_peak_bytes']) / 2**20:.0f}",
        ]
        for r in records
    ]
    header = [
        "model",
        "features",
        "px",
        "params (M)",
        "GFLOP/slice fwd",
        "infer slices/s",
        "train slices/s",
        "infer ratio to ours",
        "train ratio to ours",
        "peak MiB",
    ]
    return "### UNet++ against MONAI\n\n" + common.markdown_table(header, rows) + "\n\n"


def first_prediction_section(records: list[dict[str, Any]]) -> str:
    """Seconds from 10% annotated to a full-stack prediction."""
    if not records:
        return ""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["preset"], r["model"]), []).append(r)
    rows = []
    for (preset, model), runs in sorted(groups.items(), key=lambda kv: _order(kv[0][1])):
        rows.append(
            [
                _title(model),
                preset,
                runs[0]["device"],
                f"{runs[0]['epochs']} epochs, batch {runs[0]['batch_size']}, {runs[0]['size']} px",
                common.fmt(*common.mean_std(r["seconds_total"] for r in runs), digits=1),
                common.fmt(*common.mean_std(r["seconds_training"] for r in runs), digits=1),
                common.fmt(*common.mean_std(r["mean_dice"] for r in runs)),
            ]
        )
    header = [
        "model",
        "preset",
        "device",
        "training",
        "seconds to prediction",
        "of which training",
        "mean Dice (unseen slices)",
    ]
    return (
        "### Time to first prediction (CT sample)\n\n"
        + common.markdown_table(header, rows)
        + "\n\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    text = "".join(
        [
            acdc_section(common.read_results(out / "accuracy_acdc.jsonl"), out),
            unetsharp_pruned_section(
                common.read_results(out / "accuracy_acdc_unetsharp_pruned.jsonl")
            ),
            covid_section(common.read_results(out / "accuracy_covid.jsonl")),
            self_learning_section(common.read_results(out / "self_learning.jsonl")),
            speed_section(common.read_results(out / "speed.jsonl"), out, "speed"),
            speed_section(
                common.read_results(out / "speed_rounds_256.jsonl")
                + common.read_results(out / "speed_rounds_512.jsonl"),
                out,
                "speed_rounds",
            ),
            speed_section(common.read_results(out / "speed_retime.jsonl"), out, "speed_retime"),
            speed_section(common.read_results(out / "speed_cuda.jsonl"), out, "speed_cuda"),
            monai_section(common.read_results(out / "monai_compare.jsonl")),
            first_prediction_section(common.read_results(out / "first_prediction.jsonl")),
        ]
    )
    (out / "tables.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
