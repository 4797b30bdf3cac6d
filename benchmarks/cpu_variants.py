"""What else the CPU path leaves on the table: inference and training variants side by side.

One process, one model, the variants interleaved round-robin (the order rotates each
repetition), each timed block one slices/s figure; median and range per variant and its
median over the baseline's. Inference predicts a ``--stack``-slice stack:

- ``fp32``: eval mode under ``torch.inference_mode``, batches of ``--batch`` (8, the
  prediction default), contiguous memory: what ``engine/predict.py`` does;
- ``no_grad``: the same under ``torch.no_grad`` instead of ``inference_mode``;
- ``batch1`` / ``fused``: batches of 1 / the whole stack in one batch;
- ``channels_last``: model and input in channels-last memory format;
- ``mkldnn``: the model converted with ``torch.utils.mkldnn.to_mkldnn`` (oneDNN tensors);
- ``bf16``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` (CPUs with AVX-512 BF16/AMX);
- ``compile``: ``torch.compile`` (inductor, needs a C++ compiler), compiled before timing.

Training (``--train``): ``fp32``, ``channels_last``, ``bf16`` and ``compile`` steps of a
batch of ``--train-batch`` (forward, cross-entropy, backward, Adam).

    python3 benchmarks/cpu_variants.py --model drsegunet --widths fast --size 128 --threads 1

Results: one JSON line per (phase, variant) in ``<out>/cpu_variants.jsonl``.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import speed

INFER_VARIANTS = (
    "fp32",
    "no_grad",
    "batch1",
    "fused",
    "channels_last",
    "mkldnn",
    "bf16",
    "compile",
)
TRAIN_VARIANTS = ("fp32", "channels_last", "bf16", "compile")


def inference_runner(model: nn.Module, variant: str, stack: torch.Tensor, batch: int) -> Callable:
    """A callable predicting ``stack`` ``(Z, 1, S, S)`` the way ``variant`` says."""
    net = copy.deepcopy(model).eval()
    x = stack
    context: Callable[[], Any] = torch.inference_mode
    autocast: Callable[[], Any] = contextlib.nullcontext
    if variant == "no_grad":
        context = torch.no_grad
    elif variant == "batch1":
        batch = 1
    elif variant == "fused":
        batch = len(stack)
    elif variant == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        x = stack.contiguous(memory_format=torch.channels_last)
    elif variant == "mkldnn":
        from torch.utils import mkldnn

        net = mkldnn.to_mkldnn(net)
    elif variant == "bf16":
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    elif variant == "compile":
        net = torch.compile(net)
    elif variant != "fp32":
        raise SystemExit(f"unknown inference variant {variant!r}")

    def run() -> torch.Tensor:
        outs = []
        with context(), autocast():
            for start in range(0, len(x), batch):
                chunk = x[start : start + batch]
                if variant == "mkldnn":
                    logits = speed.logits_of(net(chunk.to_mkldnn()))
                    logits = logits.to_dense() if logits.is_mkldnn else logits
                else:
                    logits = speed.logits_of(net(chunk))
                outs.append(torch.softmax(logits.float(), 1))
        return torch.cat(outs)

    return run


def training_runner(
    model: nn.Module, variant: str, batch: int, size: int, num_classes: int
) -> Callable:
    """A callable doing one training step of ``variant``."""
    net = copy.deepcopy(model).train()
    x = torch.rand(batch, 1, size, size)
    target = torch.randint(0, num_classes, (batch, size, size))
    autocast: Callable[[], Any] = contextlib.nullcontext
    if variant == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    elif variant == "bf16":
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    elif variant not in ("fp32", "compile"):
        raise SystemExit(f"unknown training variant {variant!r}")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    step_net = torch.compile(net) if variant == "compile" else net
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with autocast():
            loss = loss_fn(speed.logits_of(step_net(x)).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def interleaved(
    runners: dict[str, Callable], reps: int, repeat: int, slices: int
) -> dict[str, list[float]]:
    """Slices/s of every runner, ``reps`` blocks each, interleaved with a rotating order."""
    names = list(runners)
    out: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for _ in range(repeat):
                runners[name]()
            out[name].append(slices * repeat / (time.perf_counter() - start))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default="drsegunet")
    parser.add_argument("--widths", default="fast", help="paper or fast")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--stack", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8, help="inference batch")
    parser.add_argument("--train-batch", type=int, default=3)
    parser.add_argument("--variants", default=",".join(INFER_VARIANTS))
    parser.add_argument("--train", default=",".join(TRAIN_VARIANTS), help="'' for none")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=3, help="steps per timed block")
    parser.add_argument("--name", default="cpu_variants")
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    torch.manual_seed(0)
    model = speed.build(args.model, args.widths)
    info = common.machine("cpu")
    out = args.out / f"{args.name}.jsonl"
    base = {"model": args.model, "widths": args.widths, "size": args.size, "machine": info}
    stack = torch.rand(args.stack, 1, args.size, args.size)

    phases: list[tuple[str, dict[str, Callable], int, int]] = []
    runners, errors = {}, {}
    reference = inference_runner(model, "fp32", stack, args.batch)()
    for variant in common.csv_list(args.variants):
        try:
            run = inference_runner(model, variant, stack, args.batch)
            result = run()  # warm-up (and compilation), checked against fp32
            errors[variant] = float((result.float() - reference).abs().max())
            runners[variant] = run
        except Exception as error:  # e.g. a layer oneDNN cannot take
            record = {**base, "phase": "infer", "variant": variant}
            record["error"] = f"{type(error).__name__}: {error}"[:400]
            common.append_result(out, record)
            print(f"infer {variant}: {record['error']}", flush=True)
    phases.append(("infer", runners, 1, args.stack))
    train_runners = {}
    for variant in common.csv_list(args.train):
        try:
            step = training_runner(model, variant, args.train_batch, args.size, speed.NUM_CLASSES)
            step()
            train_runners[variant] = step
        except Exception as error:
            record = {**base, "phase": "train", "variant": variant}
            record["error"] = f"{type(error).__name__}: {error}"[:400]
            common.append_result(out, record)
            print(f"train {variant}: {record['error']}", flush=True)
    if train_runners:
        phases.append(("train", train_runners, args.train_steps, args.train_batch))

    for phase, group, repeat, slices in phases:
        load = common.load_average()
        timings = interleaved(group, args.reps, repeat, slices)
        baseline = float(np.median(timings["fp32"])) if "fp32" in timings else float("nan")
        for variant, values in timings.items():
            stats = common.median_range(values)
            record = {
                **base,
                "phase": phase,
                "variant": variant,
                "slices_per_s": stats,
                "ratio_to_fp32": stats["median"] / baseline,
                "load_before": load,
                "load_after": common.load_average(),
                "reps": args.reps,
            }
            if phase == "infer":
                record["max_abs_diff_to_fp32"] = errors[variant]
            common.append_result(out, record)
            diff = f", max |p - p_fp32| {errors[variant]:.1e}" if phase == "infer" else ""
            print(
                f"{phase} {variant:>13}: {common.fmt_range(stats)} sl/s "
                f"(x{record['ratio_to_fp32']:.2f}){diff}; load {load} -> {record['load_after']}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
