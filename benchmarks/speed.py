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

The models of one width, size and variant are timed in turns in one process: ``--reps``
rounds (the order rotating), each running ``--iters`` inference batches and
``--train-iters`` training steps of every model; a record holds the median slices/s of
the rounds, their range and each round's figure, and the load average before and after.

    python benchmarks/speed.py --sizes 256,512 --widths paper --threads 2 --reps 3

Two kinds of rows need more than a registry name:

- ``unetsharp_fast1`` .. ``unetsharp_fast4``: UNet# in its fast (pruned) mode, keeping
  only head X(0,k) and the nodes it needs at inference. Training always runs the whole
  network (every head is supervised), so these rows time inference only.
- 3D models (``msdsunet``) take a sub-volume ``(batch, 1, --depth, S, S)``; FLOPs,
  slices/s and memory are for that sub-volume, FLOPs divided by ``--depth`` to give a
  per-slice figure and slices/s counting the ``--depth`` slices of each sub-volume.

Results: one JSON line per (model, size, variant) in ``<out>/speed.jsonl``.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from speed_tables import cell, mfu, table

from napari_numsnet.config import ModelConfig
from napari_numsnet.models import create_model, keras_parameter_count
from napari_numsnet.models.base import ModelContract, ModelKind
from napari_numsnet.pipeline import model_for_preset
from napari_numsnet.presets import PRESETS

#: Cumulative optimisation variants on CUDA, in order.
CUDA_VARIANTS = ("fp32", "cudnn_benchmark", "channels_last", "bf16", "compile")
#: Label values of the synthetic target (4 = ACDC's).
NUM_CLASSES = 4


#: Pseudo model names: UNet# in fast mode, pruned to head X(0,k).
PRUNED_PREFIX = "unetsharp_fast"


def pruned_level(name: str) -> int | None:
    """``unetsharp_fast2`` -> 2; ``None`` for a plain registry name."""
    if not name.startswith(PRUNED_PREFIX):
        return None
    level = int(name[len(PRUNED_PREFIX) :] or 1)
    if not 1 <= level <= 4:
        raise SystemExit(f"{name}: the UNet# prune level is 1..4")
    return level


def build(name: str, widths: str) -> nn.Module:
    """A registry model at the paper's widths (``paper``) or the fast preset's (``fast``).

    ``unetsharp_fastK`` is UNet# set to its fast mode, pruned to head X(0,K).
    """
    level = pruned_level(name)
    registry_name = "unetsharp" if level else name
    if widths == "paper":
        model = create_model(ModelConfig(registry_name, num_classes=NUM_CLASSES))
    else:
        model = create_model(model_for_preset(registry_name, NUM_CLASSES, PRESETS[widths]))
    if level:
        model.set_inference_head(level)
    return model


def is_volume(model: nn.Module) -> bool:
    """A 3D model: a registry model that declares the kind VOLUME (MONAI's networks and
    plain layers timed here are 2D and declare nothing)."""
    return isinstance(model, ModelContract) and model.kind is ModelKind.VOLUME


def input_shape(model: nn.Module, batch: int, size: int, depth: int) -> tuple[int, ...]:
    """``(batch, 1, S, S)``, or ``(batch, 1, depth, S, S)`` for a 3D model."""
    if is_volume(model):
        return (batch, 1, depth, size, size)
    return (batch, 1, size, size)


def slices_per_sample(model: nn.Module, depth: int) -> int:
    """Slices in one input sample: ``depth`` for a 3D model, 1 otherwise."""
    return depth if is_volume(model) else 1


def logits_of(output: Any) -> torch.Tensor:
    """The logits of our models' ``SegmentationOutput`` or of a plain tensor output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, list | tuple) and isinstance(output[0], torch.Tensor):
        return output[0]
    return output.logits


def count_flops(factory: Callable[[], nn.Module], size: int, depth: int = 16) -> tuple[int, int]:
    """FLOPs of one slice ``(1, 1, size, size)``: forward, and forward + backward.

    The forward is counted in eval mode (what inference runs: UNet#'s pruned mode, no
    training-only heads), forward + backward in training mode. A 3D model gets a
    sub-volume of ``depth`` slices and its counts are divided by ``depth``.
    """
    try:
        with torch.device("meta"):
            model = factory()
    except RuntimeError:  # a constructor that computes with tensors (MSDS-UNet)
        model = factory().to("meta")
    x = torch.zeros(input_shape(model, 1, size, depth), device="meta")
    per = slices_per_sample(model, depth)
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        logits_of(model(x)).sum()
    forward = counter.get_total_flops()
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        logits_of(model(x)).sum().backward()
    return int(forward) // per, int(counter.get_total_flops()) // per


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


@dataclass
class Prepared:
    """One model set up for timing: ``infer()`` runs a batch, ``train()`` one step."""

    infer: Callable[[], None]
    train: Callable[[], None]
    slices: int
    device: torch.device


def prepare(
    factory: Callable[[], nn.Module],
    size: int,
    batch: int,
    device: torch.device,
    variant: str,
    depth: int = 16,
) -> Prepared:
    """The model of ``factory`` with the variant's settings, its input and its optimiser.

    A 3D model runs on sub-volumes of ``depth`` slices; ``slices`` counts every slice.
    """
    torch.manual_seed(0)
    flags = set(CUDA_VARIANTS[: CUDA_VARIANTS.index(variant) + 1]) if variant else {"fp32"}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = "cudnn_benchmark" in flags
    model = factory()
    channels_last = (
        torch.channels_last_3d if slices_per_sample(model, 2) > 1 else torch.channels_last
    )
    fmt = channels_last if "channels_last" in flags else torch.contiguous_format
    model = model.to(device).to(memory_format=fmt)
    step_model = torch.compile(model) if "compile" in flags else model
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if "bf16" in flags
        else contextlib.nullcontext
    )
    shape = input_shape(model, batch, size, depth)
    x = torch.rand(shape, device=device).to(memory_format=fmt)
    target = torch.randint(0, NUM_CLASSES, (shape[0], *shape[2:]), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def infer() -> None:
        model.eval()
        with torch.inference_mode(), autocast():
            logits_of(step_model(x))

    def train() -> None:
        model.train()
        with autocast():
            loss = loss_fn(logits_of(step_model(x)).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return Prepared(infer, train, batch * slices_per_sample(model, depth), device)


def _timed(fn: Callable[[], None], repeat: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return time.perf_counter() - start


def warm_up(prepared: Prepared, warmup: int, train: bool) -> dict[str, Any]:
    """Untimed warm-up iterations, which also give the peak memory of each phase."""
    out: dict[str, Any] = {}
    _peak_reset(prepared.device)
    _timed(prepared.infer, max(1, warmup), prepared.device)
    out["infer_peak_bytes"] = _peak_bytes(prepared.device)
    if train:
        _peak_reset(prepared.device)
        _timed(prepared.train, max(1, warmup), prepared.device)
        out["train_peak_bytes"] = _peak_bytes(prepared.device)
    return out


def measure_interleaved(
    models: dict[str, Prepared],
    reps: int,
    iters: int,
    train_iters: dict[str, int],
    warmup: int = 1,
) -> dict[str, dict[str, Any]]:
    """Slices/s of several models timed in turns: ``reps`` rounds, the order rotating.

    Each round times ``iters`` inference batches and ``train_iters[name]`` training steps
    of every model; each round gives one slices/s figure per model and phase. Returns per
    model the median as ``infer_slices_per_s`` / ``train_slices_per_s``, their range
    (``*_range``), every round's figure (``*_rounds``), the peak memory of the warm-up
    and the load average before and after.
    """
    names = list(models)
    out = {n: warm_up(models[n], warmup, train_iters.get(n, 0) > 0) for n in names}
    rounds: dict[str, dict[str, list[float]]] = {n: {"infer": [], "train": []} for n in names}
    load_before = common.load_average()
    for rep in range(max(1, reps)):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            m = models[name]
            seconds = _timed(m.infer, iters, m.device)
            rounds[name]["infer"].append(m.slices * iters / seconds)
            if train_iters.get(name, 0) > 0:
                seconds = _timed(m.train, train_iters[name], m.device)
                rounds[name]["train"].append(m.slices * train_iters[name] / seconds)
    load_after = common.load_average()
    for name in names:
        for phase, values in rounds[name].items():
            if not values:
                continue
            stats = common.median_range(values)
            out[name][f"{phase}_slices_per_s"] = stats["median"]
            out[name][f"{phase}_slices_per_s_range"] = [stats["min"], stats["max"]]
            out[name][f"{phase}_slices_per_s_rounds"] = stats["values"]
        out[name].update(rounds=max(1, reps), load_before=load_before, load_after=load_after)
    return out


def measure(
    factory: Callable[[], nn.Module],
    size: int,
    batch: int,
    device: torch.device,
    variant: str,
    warmup: int,
    iters: int,
    train_iters: int,
    depth: int = 16,
    reps: int = 3,
) -> dict[str, Any]:
    """Inference and training slices/s (median of ``reps`` rounds) and peak memory."""
    prepared = prepare(factory, size, batch, device, variant, depth)
    result = measure_interleaved({"m": prepared}, reps, iters, {"m": train_iters}, warmup)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result["m"]


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(common.ALL_MODELS))
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--widths", default="paper", help="paper, fast, or paper,fast")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2, help="inference batches per round")
    parser.add_argument("--train-iters", type=int, default=2, help="training steps per round")
    parser.add_argument("--reps", type=int, default=3, help="timed rounds (median, range)")
    parser.add_argument("--variants", default=None, help="CUDA: default all, cumulative")
    parser.add_argument("--depth", type=int, default=16, help="3D models: sub-volume slices")
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
    rows = []
    for widths in common.csv_list(args.widths):
        for size in common.int_list(args.sizes):
            for variant in variants:
                rows += _interleaved_group(args, widths, size, variant, device, info, out)
    print(table(rows))
    return 0


def _interleaved_group(
    args: Any,
    widths: str,
    size: int,
    variant: str,
    device: torch.device,
    info: dict[str, Any],
    out: Path,
) -> list[dict[str, Any]]:
    """Every model at one width, size and variant, timed in interleaved rounds."""
    records: dict[str, dict[str, Any]] = {}
    prepared: dict[str, Prepared] = {}
    train_iters: dict[str, int] = {}
    for name in common.csv_list(args.models):
        factory = lambda n=name, w=widths: build(n, w)  # noqa: E731
        forward, train = count_flops(factory, size, args.depth)
        probe = factory()
        record = {
            "model": name,
            "widths": widths,
            "size": size,
            "batch": args.batch,
            "device": str(device),
            "variant": variant,
            "params": keras_parameter_count(probe),
            "flops_forward": forward,
            "flops_train": train,
            "warmup": args.warmup,
            "iters": args.iters,
            # A pruned UNet# trains as the whole network: time its inference only.
            "train_iters": 0 if pruned_level(name) else args.train_iters,
        }
        if is_volume(probe):
            record["depth"] = args.depth
        if pruned_level(name):
            record["prune_level"] = pruned_level(name)
        del probe
        try:
            prepared[name] = prepare(factory, size, args.batch, device, variant, args.depth)
            warm_up(prepared[name], 1, record["train_iters"] > 0)  # e.g. compile fails here
        except Exception as error:  # e.g. torch.compile without a compiler
            record["error"] = f"{type(error).__name__}: {error}"[:500]
            common.append_result(out, {**record, "machine": info})
            print(f"{widths} {size}px {name} {variant}: {record['error']}")
            prepared.pop(name, None)
            continue
        records[name] = record
        train_iters[name] = record["train_iters"]
    if not prepared:
        return []
    timings = measure_interleaved(prepared, args.reps, args.iters, train_iters, args.warmup)
    rows = []
    for name, record in records.items():
        record.update(timings[name])
        record.update(mfu(record, info.get("gpu")))
        record["machine"] = info
        common.append_result(out, record)
        rows.append(record)
        peak = record.get("train_peak_bytes", record["infer_peak_bytes"])
        print(
            f"{widths} {size}px {name} {variant}: "
            f"{record['flops_forward'] / 1e9:.1f} GFLOP/slice fwd, "
            f"infer {cell(record, 'infer')} sl/s, train {cell(record, 'train')} sl/s, "
            f"peak {peak / 2**20:.0f} MiB, load {record['load_before']}",
            flush=True,
        )
    del prepared
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
