"""What one training step of the CPU preset's network costs, side by side with its peers.

One process, one thread by default; each network's step (forward, cross-entropy,
backward, AdamW) on a batch of ``--batch`` random ``--size`` px slices, the networks
interleaved in ``--reps`` rounds of ``--steps`` steps (the order rotating), median and
range per network and its median ratio to DRSegUNet's:

- ``drsegunet``: DRSegUNet at the fast preset's widths (half the thesis'), what
  ``numsnet`` trains on a CPU;
- ``drsegunet_strided``: DRSegUNet-S (strided stem, ``peers.py``) at the same widths;
- ``drsegunet_quarter``: a quarter of the thesis' widths;
- ``monai_unet``: MONAI's ``UNet`` (2D, channels 16-256, strides 2, two residual units),
  about DRSegUNet's parameter count (needs ``monai``);
- any of these with ``_bf16`` (under ``torch.autocast("cpu", dtype=torch.bfloat16)``),
  ``_channels_last`` (network and input in channels-last memory) or both, in that order:
  ``drsegunet_bf16_channels_last``.

Then the convolutions of one DRSegUNet step, grouped by input shape, with the share of the
step each takes (``torch.profiler``): where the time goes.

    python3 benchmarks/step_cost.py --threads 1

Results: one JSON line per network in ``<out>/step_cost.jsonl``.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import peers

from napari_numsnet.config import ModelConfig
from napari_numsnet.models import create_model, scaled_widths

NETWORKS = (
    "drsegunet",
    "drsegunet_strided",
    "drsegunet_quarter",
    "drsegunet_channels_last",
    "drsegunet_bf16",
    "monai_unet",
)


def parse(name: str) -> tuple[str, bool, bool]:
    """``name`` split into its network and whether it asks for bfloat16 and channels-last."""
    channels_last = name.endswith("_channels_last")
    name = name.removesuffix("_channels_last")
    bf16 = name.endswith("_bf16")
    return name.removesuffix("_bf16"), bf16, channels_last


def build(name: str, num_classes: int) -> nn.Module:
    """The network called ``name`` (see the module docstring)."""
    name = parse(name)[0]
    if name == "monai_unet":
        from monai.networks.nets import UNet

        return UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=num_classes,
            channels=(16, 32, 64, 128, 256),
            strides=(2, 2, 2, 2),
            num_res_units=2,
        )
    scale = 0.25 if name == "drsegunet_quarter" else 0.5
    widths = scaled_widths("drsegunet", scale)
    model = "drsegunet_strided" if name == "drsegunet_strided" else "drsegunet"
    peers.register([model])
    return create_model(ModelConfig(model, num_classes=num_classes, widths=widths))


def stepper(name: str, batch: int, size: int, num_classes: int) -> Callable[[], None]:
    """One training step of network ``name``, ready to call."""
    torch.manual_seed(0)
    model = build(name, num_classes).train()
    x = torch.randn(batch, 1, size, size)
    target = torch.randint(0, num_classes, (batch, size, size))
    _, bf16, channels_last = parse(name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with context:
            out = model(x)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            loss = nn.functional.cross_entropy(logits.float(), target)
        loss.backward()
        optimizer.step()

    return step


def conv_profile(batch: int, size: int, num_classes: int) -> list[dict[str, Any]]:
    """DRSegUNet's convolutions (forward and backward) grouped by input shape."""
    from torch.profiler import ProfilerActivity, profile

    step = stepper("drsegunet", batch, size, num_classes)
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3):
            step()
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [
        {
            "op": e.key,
            "input_shapes": str(e.input_shapes[:2]),
            "share": e.self_cpu_time_total / total,
            "ms_per_step": e.self_cpu_time_total / 3 / 1000,
        }
        for e in events
        if e.key in ("aten::convolution_backward", "aten::mkldnn_convolution")
    ]
    return sorted(rows, key=lambda r: -r["share"])


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5, help="timed rounds")
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    names = common.csv_list(args.networks)
    steps = {n: stepper(n, args.batch, args.size, args.classes) for n in names}
    for step in steps.values():  # warm-up
        step()
    load_before = common.load_average()
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(args.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            seconds[name].append((time.perf_counter() - start) / args.steps)
    load_after = common.load_average()
    base = statistics.median(seconds[names[0]])
    print(f"load average before {load_before}, after {load_after}")
    for name in names:
        stats = common.median_range([1000 * s for s in seconds[name]])
        ratio = statistics.median(seconds[name]) / base
        params = sum(p.numel() for p in build(name, args.classes).parameters())
        print(
            f"{name:24s} {common.fmt_range(stats, 1)} ms/step, {ratio:.2f}x {names[0]}, "
            f"{params:,} parameters",
            flush=True,
        )
        common.append_result(
            args.out / "step_cost.jsonl",
            {
                "network": name,
                "ms_per_step": stats,
                "ratio_to_first": ratio,
                "parameters": params,
                "batch": args.batch,
                "size": args.size,
                "load_before": load_before,
                "load_after": load_after,
                "machine": common.machine("cpu"),
            },
        )
    print("DRSegUNet's convolutions by input shape (share of the step's CPU time):")
    for row in conv_profile(args.batch, args.size, args.classes)[:8]:
        print(
            f"  {row['share']:6.1%} {row['ms_per_step']:6.1f} ms  {row['op']:28s} "
            f"{row['input_shapes']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
