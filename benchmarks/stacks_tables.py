"""The tables of ``accuracy_stacks.py``: Dice, IoU, precision and recall per class and
model (mean ± std over seeds), UNet#'s pruned heads, and the summary printed after each run.
"""

from __future__ import annotations

from typing import Any

import common
import numpy as np


def mean_dice(scores: dict[str, dict[str, float]], key: str = "dice") -> float:
    """Mean of ``key`` over the classes, background left out."""
    return float(np.nanmean([v[key] for k, v in scores.items() if k != "background"]))


def summarize(records: list[dict[str, Any]], class_names: list[str]) -> str:
    """Markdown tables: Dice per class and mean (mean ± std over seeds), then IoU/P/R."""
    out = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["regime"], r["model"]), []).append(r)
    foreground = [c for c in class_names if c != "background"]
    for metric in ("dice", "iou", "precision", "recall"):
        rows = []
        for (regime, model), runs in sorted(
            groups.items(), key=lambda kv: (kv[0][0] != "few", common.order(kv[0][1]))
        ):
            cells = []
            for c in foreground:
                cells.append(common.fmt(*common.mean_std(r["scores"][c][metric] for r in runs)))
            means = [np.nanmean([r["scores"][c][metric] for c in foreground]) for r in runs]
            cells.append(common.fmt(*common.mean_std(means)))
            minutes = np.mean([r["train_seconds"] for r in runs]) / 60
            label = "10% slices" if regime == "few" else "all slices"
            rows.append([common.title(model), label, *cells, f"{minutes:.1f}"])
        header = ["model", "annotated", *foreground, "mean", "train min/run"]
        out.append(f"**{metric}** (mean ± std over seeds, (n) seeds)\n\n")
        out.append(common.markdown_table(header, rows) + "\n\n")
    return "".join(out)


def summarize_pruned(records: list[dict[str, Any]], class_names: list[str]) -> str:
    """UNet#: Dice of the accurate mode and of each pruned head, same trained weights."""
    runs = [r for r in records if "pruned" in r]
    if not runs:
        return ""
    foreground = [c for c in class_names if c != "background"]

    def row(label: str, parts: list[dict[str, Any]]) -> list[str]:
        cells = [
            common.fmt(*common.mean_std(p["scores"][c]["dice"] for p in parts)) for c in foreground
        ]
        means = [np.nanmean([p["scores"][c]["dice"] for c in foreground]) for p in parts]
        slices = np.mean([r["eval_slices"] for r in runs])
        speed = np.mean([slices / p["predict_seconds"] for p in parts])
        return [label, *cells, common.fmt(*common.mean_std(means)), f"{speed:.1f}"]

    rows = [row("accurate (mean of 4 heads)", runs)]
    for level in ("4", "3", "2", "1"):
        rows.append(row(f"fast, head X(0,{level})", [r["pruned"][level] for r in runs]))
    header = ["UNet# mode", *foreground, "mean", "predicted slices/s"]
    return common.markdown_table(header, rows) + "\n\n"


def run_summary(record: dict[str, Any]) -> str:
    """One finished run in words: mean Dice pooled and per volume, steps and training
    seconds, then (where the run scored them) the largest components and test-time flips.
    """
    scores = record["scores"]
    lines = [
        f"mean Dice {mean_dice(scores):.3f} pooled, {mean_dice(scores, 'dice_per_volume'):.3f}"
        f" per volume, {record['steps']} steps, train {record['train_seconds']:.0f} s"
    ]
    if "dice_largest_component" in next(iter(scores.values())):
        lines.append(
            f"  largest component per class: {mean_dice(scores, 'dice_largest_component'):.3f}"
            f" pooled, {mean_dice(scores, 'dice_per_volume_largest_component'):.3f} per volume"
        )
        chosen = (record["chosen_component"] or {}).get("classes", [])
        lines.append(
            f"  largest component of the validated choice {chosen}:"
            f" {mean_dice(scores, 'dice_chosen_component'):.3f} pooled,"
            f" {mean_dice(scores, 'dice_per_volume_chosen_component'):.3f} per volume"
        )
    if record.get("tta"):
        tta = record["tta"]["scores"]
        lines.append(
            f"  test-time flips: {mean_dice(tta):.3f} pooled,"
            f" {mean_dice(tta, 'dice_per_volume'):.3f} per volume"
        )
    return "\n".join(lines)
