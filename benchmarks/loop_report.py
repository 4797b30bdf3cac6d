"""Tables and plots of the correction-loop benchmark (``loop.py``).

Curves are the mean over seeds of the mean over stacks of each round's Dice. Two
figures of merit, against ``random``:

* slices saved: random's Dice after ``k`` corrected slices per stack, and the (linearly
  interpolated) number of corrected slices ``k'`` after which a strategy first reaches
  it; saved = ``1 - k'/k`` (the issue's target: at least 30%);
* gap closed: ``(strategy - random) / (oracle - random)`` at the same ``k`` (target: at
  least one half), for each oracle run (``oracle``, ``oracle_errors``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common
import numpy as np

ORDER = ("entropy", "entropy_sum", "margin", "tta", "even", "random", "oracle", "oracle_errors")


def curves(records: list[dict[str, Any]], key: str = "dice") -> dict[str, np.ndarray]:
    """``strategy -> (seeds, rounds + 1)`` array of ``key`` (NaN-padded)."""
    out: dict[str, list[list[float]]] = {}
    for rec in records:
        out.setdefault(rec["strategy"], []).append([r[key] for r in rec["rounds"]])
    width = max((len(row) for rows in out.values() for row in rows), default=0)
    return {
        s: np.array([row + [np.nan] * (width - len(row)) for row in rows])
        for s, rows in out.items()
    }


def slices_to_reach(curve: np.ndarray, target: float) -> float:
    """The interpolated round at which ``curve`` (mean per round) first reaches ``target``."""
    for k in range(len(curve)):
        if curve[k] >= target:
            if k == 0:
                return 0.0
            lo, hi = curve[k - 1], curve[k]
            return k - 1 + (target - lo) / (hi - lo) if hi > lo else float(k)
    return float("nan")


def _sorted(strategies) -> list[str]:
    return sorted(strategies, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))


def summarize(records: list[dict[str, Any]]) -> str:
    """Markdown: Dice per round, slices saved and gap closed against random, costs."""
    if not records:
        return "no records"
    dice = curves(records)
    model = curves(records, "model_dice")
    rounds = next(iter(dice.values())).shape[1]
    first = records[0]
    if first["initial_epochs"]:
        initial = f"{first['initial_epochs']} epochs"
    else:
        initial = f"the preset's step budget ({first.get('initial_steps')} steps)"
    factor = first.get("retrain_lr_factor", 1.0)
    lines = [
        f"{first['dataset']}: {first['stacks']} stacks ({first['slices']} slices), "
        f"{first['model']} ({first['preset']} preset), initial {first['initial_slices']} "
        f"slices and {initial}, {first['budget_steps']} steps of "
        f"batch {first['batch_size']} per retrain at {factor:g} x the peak learning rate, "
        f"seeds {sorted({r['seed'] for r in records})}.",
        "",
        "Mean Dice of the user's result (annotated slices replaced by their annotation), "
        "mean ± std over seeds, per corrected slices per stack:",
        "",
    ]
    header = ["strategy", *[f"k={k}" for k in range(rounds)], "model only, k=last"]
    rows = []
    for s in _sorted(dice):
        cells = [common.fmt(*common.mean_std(dice[s][:, k])) for k in range(rounds)]
        rows.append([s, *cells, common.fmt(*common.mean_std(model[s][:, -1]))])
    lines += [common.markdown_table(header, rows), ""]
    if "random" in dice:
        mean = {s: np.nanmean(c, axis=0) for s, c in dice.items()}
        rnd = mean["random"]
        header = ["strategy", *[f"k={k}" for k in range(1, rounds)]]
        saved = []
        oracles = [o for o in ("oracle", "oracle_errors") if o in mean]
        closed: dict[str, list[list[str]]] = {o: [] for o in oracles}
        for s in _sorted(mean):
            if s == "random":
                continue
            for o in oracles:
                if s in oracles:
                    continue
                gap = mean[o] - rnd
                closed[o].append(
                    [s]
                    + [
                        f"{(mean[s][k] - rnd[k]) / gap[k]:+.0%}" if gap[k] > 1e-9 else "no gap"
                        for k in range(1, rounds)
                    ]
                )
            saved.append(
                [s]
                + [
                    f"{1 - slices_to_reach(mean[s], rnd[k]) / k:+.0%}"
                    if not np.isnan(slices_to_reach(mean[s], rnd[k]))
                    else "not reached"
                    for k in range(1, rounds)
                ]
            )
        lines += [
            "Corrected slices saved to reach random's Dice after k (1 - k'/k; negative: "
            "more slices than random):",
            "",
            common.markdown_table(header, saved),
            "",
        ]
        for o, rows_closed in closed.items():
            if rows_closed:
                lines += [
                    f"Share of the gap between random and the oracle (`{o}`) closed at k "
                    "(no gap: that oracle is not above random):",
                    "",
                    common.markdown_table(header, rows_closed),
                    "",
                ]
    cost = []
    for s in _sorted(dice):
        recs = [r for r in records if r["strategy"] == s]
        steps = [e for r in recs for e in r["rounds"]]
        retrain = [e["retrain_seconds"] for e in steps if "retrain_seconds" in e]
        predict = np.mean([e["predict_seconds"] for e in steps])
        extra = np.mean([e["tta_seconds"] + e["choose_seconds"] for e in steps])
        cpu = np.mean([r["rounds"][-1]["cpu_minutes"] for r in recs])
        cost.append(
            [
                s,
                f"{np.mean(retrain):.1f} (max {np.max(retrain):.1f})" if retrain else "n/a",
                f"{predict:.2f}",
                f"{extra:.3f} ({extra / predict:+.1%})",
                f"{cpu:.1f}",
            ]
        )
    lines += [
        "Costs per round (seconds, mean over rounds and seeds; all stacks together):",
        "",
        common.markdown_table(
            [
                "strategy",
                "retrain s",
                "predict s",
                "choosing s (share of predict)",
                "CPU min in all",
            ],
            cost,
        ),
    ]
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Mean Dice against corrected slices per stack and against CPU minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dice, cpu = curves(records), curves(records, "cpu_minutes")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for s in _sorted(dice):
        mean, std = np.nanmean(dice[s], axis=0), np.nanstd(dice[s], axis=0)
        k = np.arange(len(mean))
        style = "--" if s in ("random", "even", "oracle", "oracle_errors") else "-"
        axes[0].errorbar(k, mean, yerr=std, label=s, ls=style, marker="o", capsize=3)
        axes[1].plot(np.nanmean(cpu[s], axis=0), mean, ls=style, marker="o", label=s)
    axes[0].set_xlabel("corrected slices per stack")
    axes[1].set_xlabel("CPU minutes (one thread, from the first training)")
    axes[0].set_ylabel("mean Dice over the stacks")
    axes[0].legend(fontsize=8)
    first = records[0]
    fig.suptitle(
        f"{title}: {first['stacks']} stacks, {first['model']}, {first['budget_steps']} "
        f"steps per retrain, {len({r['seed'] for r in records})} seeds (mean ± std)"
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
