"""Recipes side by side: the runs of ``accuracy_stacks.py`` that differ in their recipe.

Each ``--runs`` item is a results file of ``<out>`` (``accuracy_<name>.jsonl`` or
``<name>.jsonl``) with a label, ``NAME=LABEL``; every record of a file is one seed of
that recipe. Prints a markdown table (mean Dice per volume per seed, mean ± sample
standard deviation over the seeds, with the largest component of the classes the
validation slices chose, pooled, on the 35 held-out slices of the training pool, and the
training minutes) and the learning curves (mean over seeds at each scored step), and
draws Dice per volume against training minutes, one colour per recipe, one line per
seed, to ``--plot``:

    python3 benchmarks/curves.py --runs acdc_base=before,acdc_new=after --plot curves.png
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from stacks_tables import mean_dice


def _records(out: Path, name: str) -> list[dict[str, Any]]:
    for path in (out / f"accuracy_{name}.jsonl", out / f"{name}.jsonl"):
        if path.exists():
            return sorted(common.read_results(path), key=lambda r: r["seed"])
    raise SystemExit(f"{name}: no results file {out}/accuracy_{name}.jsonl or {name}.jsonl")


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def summary_row(label: str, records: list[dict[str, Any]]) -> str:
    """One markdown row: the recipe's seeds and means."""
    per_volume = [mean_dice(r["scores"], "dice_per_volume") for r in records]
    chosen = [
        mean_dice(r["scores"], "dice_per_volume_chosen_component")
        if "dice_per_volume_chosen_component" in r["scores"]["right ventricle"]
        else float("nan")
        for r in records
    ]
    pooled = [mean_dice(r["scores"]) for r in records]
    held_out = [r["best"]["val_dice_mean"] for r in records if r.get("best")]
    minutes = [r["train_seconds"] / 60 for r in records]
    seeds = ", ".join(str(r["seed"]) for r in records)
    steps = sorted({int(r["steps"]) for r in records})
    cells = [
        label,
        "/".join(f"{s:,}" for s in steps),
        seeds,
        " / ".join(f"{v:.3f}" for v in per_volume),
        f"**{_mean_sd(per_volume)}**",
        _mean_sd(chosen),
        _mean_sd(pooled),
        _mean_sd(held_out) if held_out else "",
        f"{min(minutes):.1f}-{max(minutes):.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def curve_rows(label: str, records: list[dict[str, Any]]) -> list[str]:
    """``label: step (minutes): per volume`` at each step every seed scored."""
    steps = sorted(set.intersection(*({p["step"] for p in r["curve"]} for r in records)))
    points = []
    for step in steps:
        at = [next(p for p in r["curve"] if p["step"] == step) for r in records]
        minutes = np.mean([p["train_seconds"] / 60 for p in at])
        dice = np.mean([p["dice_per_volume"] for p in at])
        points.append(f"{step:,} ({minutes:.1f} min): {dice:.3f}")
    return [f"- {label}: " + "; ".join(points)]


def plot(runs: list[tuple[str, list[dict[str, Any]]]], path: Path) -> None:
    """Dice per volume against training minutes, one colour per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (label, records) in enumerate(runs):
        colour = f"C{index}"
        for k, r in enumerate(records):
            minutes = [p["train_seconds"] / 60 for p in r["curve"]]
            dice = [p["dice_per_volume"] for p in r["curve"]]
            ax.plot(minutes, dice, color=colour, marker="o", ms=3, label=label if k == 0 else None)
    ax.axhline(0.85, color="grey", ls="--", lw=1, label="target of the CPU preset (0.85)")
    ax.set_xlabel("training minutes on 2 CPU cores (scoring not counted)")
    ax.set_ylabel("mean Dice per volume, ACDC imagesVal")
    ax.set_ylim(0.6, 0.9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="NAME=LABEL,NAME=LABEL,...")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the learning curves")
    args = parser.parse_args(argv)
    runs = []
    for item in common.csv_list(args.runs):
        name, _, label = item.partition("=")
        runs.append((label or name, _records(args.out, name)))
    header = (
        "| recipe | steps | seeds | per volume, by seed | **mean, per volume** | with the chosen "
        "largest component | mean, pooled | held-out slices | training minutes |"
    )
    print(header)
    print("|" + "---|" * 9)
    for label, records in runs:
        print(summary_row(label, records))
    print()
    for label, records in runs:
        if all(r.get("curve") for r in records):
            print("\n".join(curve_rows(label, records)))
    if args.plot:
        plot(runs, args.plot)
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
