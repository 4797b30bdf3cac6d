"""Training and prediction throughput on a loaded CPU, for each thread policy.

The workload is the demo's: the default model (DRSegUNet) at the fast preset's widths,
128 x 128 slices, training steps of a batch of 3 (forward, loss, backward, Adam) and the
prediction of a 30-slice stack in batches of 8 under ``torch.inference_mode``. Each load
condition (0, 1, 2 background processes spinning ``while 1: pass``, bounded in time and
always killed) is measured for each thread policy (``1`` and ``2``: fixed counts; ``auto``:
the project's policy, :func:`napari_numsnet.engine.threads.apply_threads`, applied again
before every timed block), the policies interleaved round-robin in one process (the order
rotates each repetition). Every timed block gives one slices/s figure; the table shows
their median and range and each policy's median over the best fixed count's.

    python3 benchmarks/threads.py --busy 0,1,2 --policies 1,2,auto --reps 5

Results: one JSON line per (condition, policy) in ``<out>/threads.jsonl``, with the load
average before the condition and the background load the policy measured.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import speed

from napari_numsnet.engine import threads
from napari_numsnet.models import create_model
from napari_numsnet.pipeline import model_for_preset
from napari_numsnet.presets import PRESETS

#: Classes of the CT sample with the background.
NUM_CLASSES = 6


@contextlib.contextmanager
def busy_processes(count: int, limit: float) -> Iterator[list[subprocess.Popen]]:
    """``count`` processes that each keep a core busy, for at most ``limit`` seconds.

    They stop by themselves after ``limit`` seconds and are killed on leaving the block.
    """
    code = f"import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end: pass"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    try:
        time.sleep(1.0 if count else 0.0)  # let them get going before anything is timed
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def workload(size: int, batch: int, stack: int, predict_batch: int) -> dict[str, Callable]:
    """The demo's model and data: ``{"train": step(), "predict": run()}`` and slice counts."""
    torch.manual_seed(0)
    model: nn.Module = create_model(model_for_preset("drsegunet", NUM_CLASSES, PRESETS["fast"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(batch, 1, size, size)
    target = torch.randint(0, NUM_CLASSES, (batch, size, size))
    volume = torch.rand(stack, 1, size, size)

    def train_step() -> None:
        model.train()
        loss = loss_fn(speed.logits_of(model(x)), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def predict() -> None:
        model.eval()
        with torch.inference_mode():
            for start in range(0, stack, predict_batch):
                torch.softmax(speed.logits_of(model(volume[start : start + predict_batch])), 1)

    return {"train": train_step, "predict": predict, "train_slices": batch, "stack": stack}


def set_policy(policy: str) -> threads.ThreadChoice:
    """Apply ``"1"``, ``"2"`` (fixed) or ``"auto"`` (the project's policy)."""
    return threads.apply_threads(None if policy == "auto" else int(policy))


def time_block(fn: Callable[[], None], repeat: int) -> float:
    """Seconds for ``repeat`` calls of ``fn`` after one untimed call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return time.perf_counter() - start


def run_condition(
    busy: int, policies: list[str], work: dict[str, Any], args: Any
) -> dict[str, dict[str, Any]]:
    """Interleaved timed blocks of every policy with ``busy`` spinning processes."""
    out: dict[str, dict[str, Any]] = {
        p: {"train": [], "predict": [], "threads": [], "measured_busy": []} for p in policies
    }
    load = common.load_average()
    with busy_processes(busy, limit=args.limit):
        for rep in range(args.reps):
            shift = rep % len(policies)
            for policy in policies[shift:] + policies[:shift]:
                choice = set_policy(policy)
                record = out[policy]
                record["threads"].append(choice.threads)
                record["measured_busy"].append(choice.busy if not choice.fixed else None)
                seconds = time_block(work["train"], args.steps)
                record["train"].append(work["train_slices"] * args.steps / seconds)
                seconds = time_block(work["predict"], 1)
                record["predict"].append(work["stack"] / seconds)
    for record in out.values():
        record["load_before"] = load
    return out


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--busy", default="0,1,2", help="background spinning processes")
    parser.add_argument("--policies", default="1,2,auto")
    parser.add_argument("--reps", type=int, default=5, help="timed blocks per policy")
    parser.add_argument("--steps", type=int, default=8, help="training steps per block")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--stack", type=int, default=30)
    parser.add_argument("--predict-batch", type=int, default=8)
    parser.add_argument("--limit", type=float, default=600.0, help="seconds a spinner lives")
    parser.add_argument("--name", default="threads", help="results file stem")
    args = parser.parse_args(argv)
    policies = common.csv_list(args.policies)
    work = workload(args.size, args.batch, args.stack, args.predict_batch)
    info = common.machine("cpu")
    rows = []
    for busy in common.int_list(args.busy):
        results = run_condition(busy, policies, work, args)
        fixed = [p for p in policies if p != "auto"]
        best = {
            kind: max((np.median(results[p][kind]) for p in fixed), default=float("nan"))
            for kind in ("train", "predict")
        }
        for policy in policies:
            r = results[policy]
            record = {
                "busy_processes": busy,
                "policy": policy,
                "threads": r["threads"],
                "measured_busy": r["measured_busy"],
                "load_before": r["load_before"],
                "train_slices_per_s": common.median_range(r["train"]),
                "predict_slices_per_s": common.median_range(r["predict"]),
                "size": args.size,
                "batch": args.batch,
                "steps": args.steps,
                "reps": args.reps,
                "machine": info,
            }
            for kind in ("train", "predict"):
                record[f"{kind}_ratio_to_best_fixed"] = (
                    record[f"{kind}_slices_per_s"]["median"] / best[kind]
                )
            common.append_result(args.out / f"{args.name}.jsonl", record)
            rows.append(record)
            print(
                f"busy {busy} policy {policy:>4} threads {r['threads']}: "
                f"train {common.fmt_range(record['train_slices_per_s'])} sl/s "
                f"(x{record['train_ratio_to_best_fixed']:.2f} of best fixed), "
                f"predict {common.fmt_range(record['predict_slices_per_s'])} sl/s "
                f"(x{record['predict_ratio_to_best_fixed']:.2f}); load before "
                f"{r['load_before']}",
                flush=True,
            )
    print(table(rows))
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the README from the records of one run."""
    body = [
        [
            r["busy_processes"],
            r["policy"],
            ",".join(map(str, sorted(set(r["threads"])))),
            common.fmt_range(r["train_slices_per_s"], 1),
            f"{r['train_ratio_to_best_fixed']:.2f}",
            common.fmt_range(r["predict_slices_per_s"], 1),
            f"{r['predict_ratio_to_best_fixed']:.2f}",
            " ".join(f"{v:.2f}" for v in r["load_before"][:1]),
        ]
        for r in rows
    ]
    header = [
        "busy processes",
        "policy",
        "threads",
        "train slices/s, median (range)",
        "/ best fixed",
        "predict slices/s, median (range)",
        "/ best fixed",
        "load before",
    ]
    return common.markdown_table(header, body)


if __name__ == "__main__":
    raise SystemExit(main())
