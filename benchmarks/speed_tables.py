"""The tables of ``speed.py``: slices/s cells, the Markdown table and MFU."""

from __future__ import annotations

from typing import Any

import common

#: Dense peak FLOP/s of GPUs by name fragment: (fp32 without tensor cores, bf16 tensor).
GPU_PEAKS = {
    "H100": (67e12, 989e12),
    "H200": (67e12, 989e12),
    "A100": (19.5e12, 312e12),
}


def mfu(record: dict[str, Any], gpu: str | None) -> dict[str, float]:
    """Achieved fraction of the GPU's peak FLOP/s (inference and training)."""
    if not gpu:
        return {}
    peaks = next((v for k, v in GPU_PEAKS.items() if k in gpu), None)
    if peaks is None:
        return {}
    peak = peaks[1] if record["variant"] in ("bf16", "compile") else peaks[0]
    out = {"peak_flops": peak}
    out["infer_mfu"] = record["infer_slices_per_s"] * record["flops_forward"] / peak
    if "train_slices_per_s" in record:
        out["train_mfu"] = record["train_slices_per_s"] * record["flops_train"] / peak
    return out


def cell(record: dict[str, Any], phase: str, digits: int = 2) -> str:
    """``median (min-max)`` of a phase's slices/s; ``n/a`` when not timed."""
    if f"{phase}_slices_per_s" not in record:
        return "n/a"
    low, high = record[f"{phase}_slices_per_s_range"]
    d = digits
    return f"{record[f'{phase}_slices_per_s']:.{d}f} ({low:.{d}f}-{high:.{d}f})"


def table(records: list[dict[str, Any]]) -> str:
    """Markdown table: slices/s as median (range) of the rounds, and the load average."""
    header = [
        "model",
        "widths",
        "px",
        "variant",
        "params (M)",
        "GFLOP/slice fwd",
        "infer slices/s",
        "train slices/s",
        "peak MiB",
        "load (1 min) before-after",
    ]
    rows = [
        [
            common.title(r["model"]),
            r["widths"],
            r["size"],
            r["variant"],
            f"{r['params'] / 1e6:.2f}",
            f"{r['flops_forward'] / 1e9:.1f}",
            cell(r, "infer"),
            cell(r, "train", 3),
            f"{r.get('train_peak_bytes', r['infer_peak_bytes']) / 2**20:.0f}",
            f"{r['load_before'][0]:.1f}-{r['load_after'][0]:.1f}" if r["load_before"] else "?",
        ]
        for r in records
    ]
    return common.markdown_table(header, rows)
