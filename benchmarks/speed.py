"""Training and inference throughput, peak memory, FLOPs and MFU of every model.

For each model and slice size: FLOPs per slice (forward, and forward + backward) counted
with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device; inference
throughput (``torch.inference_mode``, eval mode) and training throughput (forward, loss,
backward, Adam step) in slices per second after warm-up iterations; peak memory (CUDA:
``max_memory_allocated``; CPU: the process's peak resident set, reset before each
measurement through ``/proc/self/clear_refs``). On CUDA the optimisation variants are
applied one on top of the other (``fp32`` -> ``+cudnn_benchmark`` -> ``+channels_last``
-> ``+bf16`` -> ``+compile``) so that the before/after of each is visible, and MFU is
the achieved FLOP/s over the GPU's peak for the variant's precision.

    python benchmarks/speed.py --sizes 256,512 --widths paper --threads 2

Results: one JSON line per (model, size, variant) in ``<out>/speed.jsonl``.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from napari_numsnet.config import PRESETS, ModelConfig
from napari_numsnet.models import create_model, keras_parameter_count
from napari_numsnet.pipeline import model_for_preset

#: Dense peak FLOP/s of GPUs by name fragment: (fp32 without tensor cores, bf16 tensor).
GPU_PEAKS = {
    "H100": (67e12, 989e12),
    "H200": (67e12, 989e12),
    "A100": (19.5e12, 312e12),
}
#: Cumulative optimisation variants on CUDA, in order.
CUDA_VARIANTS = ("fp32", "cudnn_benchmark", "channels_last", "bf16", "compile")
#: Label values of the synthetic target (4 = ACDC's).
NUM_CLASSES = 4


def build(name: str, widths: str) -> nn.Module:
    """A registry model at the paper's widths (``paper``) or the fast preset's (``fast``)."""
    if widths == "paper":
        return create_model(ModelConfig(name, num_classes=NUM_CLASSES))
    return create_model(model_for_preset(name, NUM_CLASSES, PRESETS[widths]))


def logits_of(output: Any) -> torch.Tensor:
    """The logits of our models' ``SegmentationOutput`` or of a plain tensor output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, list | tuple) and isinstance(output[0], torch.Tensor):
        return output[0]
    return output.logits


def count_flops(factory: Callable[[], nn.Module], size: int) -> tuple[int, int]:
    """FLOPs of one slice ``(1, 1, size, size)``: forward, and forward + backward."""
    with torch.device("meta"):
        model = factory()
    x = torch.zeros(1, 1, size, size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        logits_of(model(x)).sum()
    forward = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        logits_of(model(x)).sum().backward()
    return int(forward), int(counter.get_total_flops())


def _peak_reset(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated())
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return -1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    factory: Callable[[], nn.Module],
    size: int,
    batch: int,
    device: torch.device,
    variant: str,
    warmup: int,
    iters: int,
    train_iters: int,
) -> dict[str, Any]:
    """Inference and training slices/s and peak memory of one model, size and variant."""
    torch.manual_seed(0)
    flags = set(CUDA_VARIANTS[: CUDA_VARIANTS.index(variant) + 1]) if variant else {"fp32"}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = "cudnn_benchmark" in flags
    fmt = torch.channels_last if "channels_last" in flags else torch.contiguous_format
    model = factory().to(device).to(memory_format=fmt)
    step_model = torch.compile(model) if "compile" in flags else model
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if "bf16" in flags
        else contextlib.nullcontext
    )
    x = torch.rand(batch, 1, size, size, device=device).to(memory_format=fmt)
    target = torch.randint(0, NUM_CLASSES, (batch, size, size), device=device)
    result: dict[str, Any] = {}

    model.eval()
    _peak_reset(device)
    with torch.inference_mode():
        for _ in range(warmup):
            with autocast():
                logits_of(step_model(x))
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            with autocast():
                logits_of(step_model(x))
        _sync(device)
    seconds = time.perf_counter() - start
    result["infer_slices_per_s"] = batch * iters / seconds
    result["infer_peak_bytes"] = _peak_bytes(device)

    if train_iters > 0:
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()

        def step() -> None:
            with autocast():
                loss = loss_fn(logits_of(step_model(x)).float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        _peak_reset(device)
        for _ in range(warmup):
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(train_iters):
            step()
        _sync(device)
        seconds = time.perf_counter() - start
        result["train_slices_per_s"] = batch * train_iters / seconds
        result["train_peak_bytes"] = _peak_bytes(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


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


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(common.ALL_MODELS))
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--widths", default="paper", help="paper, fast, or paper,fast")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2, help="timed inference iterations")
    parser.add_argument("--train-iters", type=int, default=2, help="timed training steps")
    parser.add_argument("--variants", default=None, help="CUDA: default all, cumulative")
    parser.add_argument("--name", default="speed", help="results file stem")
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else args.device
        if args.device != "auto"
        else "cpu"
    )
    variants = (
        common.csv_list(args.variants)
        if args.variants
        else (list(CUDA_VARIANTS) if device.type == "cuda" else ["fp32"])
    )
    info = common.machine(str(device))
    out = args.out / f"{args.name}.jsonl"
    for widths in common.csv_list(args.widths):
        for size in common.int_list(args.sizes):
            for name in common.csv_list(args.models):
                factory = lambda n=name, w=widths: build(n, w)  # noqa: E731
                forward, train = count_flops(factory, size)
                params = keras_parameter_count(factory())
                for variant in variants:
                    record = {
                        "model": name,
                        "widths": widths,
                        "size": size,
                        "batch": args.batch,
                        "device": str(device),
                        "variant": variant,
                        "params": params,
                        "flops_forward": forward,
                        "flops_train": train,
                        "warmup": args.warmup,
                        "iters": args.iters,
                        "train_iters": args.train_iters,
                    }
                    try:
                        record.update(
                            measure(
                                factory,
                                size,
                                args.batch,
                                device,
                                variant,
                                args.warmup,
                                args.iters,
                                args.train_iters,
                            )
                        )
                    except Exception as error:  # e.g. torch.compile without a compiler
                        record["error"] = f"{type(error).__name__}: {error}"[:500]
                        common.append_result(out, {**record, "machine": info})
                        print(f"{widths} {size}px {name} {variant}: {record['error']}")
                        continue
                    record.update(mfu(record, info.get("gpu")))
                    record["machine"] = info
                    common.append_result(out, record)
                    peak = record.get("train_peak_bytes", record["infer_peak_bytes"])
                    print(
                        f"{widths} {size}px {name} {variant}: "
                        f"{forward / 1e9:.1f} GFLOP/slice fwd, "
                        f"infer {record['infer_slices_per_s']:.2f} sl/s, "
                        f"train {record.get('train_slices_per_s', float('nan')):.2f} sl/s, "
                        f"peak {peak / 2**20:.0f} MiB",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
