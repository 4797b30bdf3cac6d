"""Smoke test of the thread and CPU-variant benchmarks: tiny settings, end to end."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_threads_benchmark_times_every_policy_and_kills_its_spinners(tmp_path):
    bench = importlib.import_module("threads")
    args = ["--out", str(tmp_path), "--busy", "0,1", "--policies", "1,auto", "--reps", "2",
            "--steps", "1", "--size", "32", "--stack", "4", "--predict-batch", "2",
            "--limit", "60"]  # fmt: skip
    assert bench.main(args) == 0
    records = _lines(tmp_path / "threads.jsonl")
    assert [(r["busy_processes"], r["policy"]) for r in records] == [
        (b, p) for b in (0, 1) for p in ("1", "auto")
    ]
    for r in records:
        assert r["train_slices_per_s"]["n"] == 2 and r["train_slices_per_s"]["median"] > 0
        assert r["predict_slices_per_s"]["min"] <= r["predict_slices_per_s"]["max"]
        if r["policy"] != "auto":
            assert r["threads"] == [int(r["policy"])] * 2
    fixed, auto = records[2], records[3]  # one busy process: fixed 1, the policy
    assert auto["train_ratio_to_best_fixed"] == pytest.approx(
        auto["train_slices_per_s"]["median"] / fixed["train_slices_per_s"]["median"]
    )
    with bench.busy_processes(1, limit=30) as procs:
        assert procs[0].poll() is None
    assert procs[0].poll() is not None  # killed on leaving


def test_cpu_variants_benchmark_compares_with_fp32(tmp_path):
    bench = importlib.import_module("cpu_variants")
    args = ["--out", str(tmp_path), "--size", "32", "--stack", "4", "--batch", "2",
            "--variants", "fp32,no_grad,fused,channels_last", "--train", "fp32,channels_last",
            "--reps", "2", "--train-steps", "1", "--train-batch", "1"]  # fmt: skip
    assert bench.main(args) == 0
    records = _lines(tmp_path / "cpu_variants.jsonl")
    infer = {r["variant"]: r for r in records if r["phase"] == "infer"}
    assert set(infer) == {"fp32", "no_grad", "fused", "channels_last"}
    assert infer["fp32"]["ratio_to_fp32"] == 1.0
    assert all(r["max_abs_diff_to_fp32"] < 1e-4 for r in infer.values())
    assert {r["variant"] for r in records if r["phase"] == "train"} == {"fp32", "channels_last"}


def test_step_cost_benchmark_times_each_network_and_profiles_the_convolutions(tmp_path, capsys):
    bench = importlib.import_module("step_cost")
    networks = "drsegunet,drsegunet_quarter,drsegunet_channels_last"
    args = ["--out", str(tmp_path), "--size", "32", "--batch", "1", "--reps", "2",
            "--steps", "1", "--networks", networks]  # fmt: skip
    assert bench.main(args) == 0
    records = {r["network"]: r for r in _lines(tmp_path / "step_cost.jsonl")}
    assert set(records) == set(networks.split(","))
    assert records["drsegunet"]["ratio_to_first"] == 1.0
    assert all(r["ms_per_step"]["n"] == 2 for r in records.values())
    # Half the fast preset's widths: about a quarter of its parameters.
    quarter = records["drsegunet_quarter"]["parameters"] / records["drsegunet"]["parameters"]
    assert 0.2 < quarter < 0.3
    assert "aten::convolution_backward" in capsys.readouterr().out
