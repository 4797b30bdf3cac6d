"""Our UNet++ against MONAI's ``BasicUNetPlusPlus``, side by side in one run.

MONAI's ``features`` has six entries: five encoder widths (``conv_0_0`` .. ``conv_4_0``)
and the width of the last top-row node ``X(0,4)``. Our UNet++ (paper widths
``(32, 64, 128, 256, 512)``, output node ``X(1,5)`` of width 32) maps to
``features=(32, 64, 128, 256, 512, 32)``; MONAI's default
``(32, 32, 64, 128, 256, 32)`` is a narrower network (its second level has 32 filters,
not 64) and is measured too. To match our blocks the MONAI model gets ReLU, BatchNorm,
no dropout and transposed-convolution up-sampling (``upsample="deconv"``). Remaining
differences, inherent to MONAI's block: BatchNorm in every node (ours: encoder only)
placed before the activation, and the top-row nodes up-sample without halving the
channels (``halves=False``), which makes them slightly wider than ours.

    python benchmarks/monai_compare.py --sizes 256 --threads 2

Results: ``<out>/monai_compare.jsonl``; skipped, with the reason, when MONAI is absent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import speed

from napari_numsnet.models import keras_parameter_count

#: MONAI feature tuples: the one matching our UNet++ and MONAI's default.
MONAI_FEATURES = {
    "monai_matched": (32, 64, 128, 256, 512, 32),
    "monai_default": (32, 32, 64, 128, 256, 32),
}


def monai_available() -> bool:
    """Whether MONAI can be imported."""
    try:
        import monai  # noqa: F401
    except ImportError:
        return False
    return True


def monai_unetpp(features: tuple[int, ...], num_classes: int = speed.NUM_CLASSES):
    """MONAI's 2D ``BasicUNetPlusPlus`` configured like our UNet++."""
    from monai.networks.nets import BasicUNetPlusPlus

    return BasicUNetPlusPlus(
        spatial_dims=2,
        in_channels=1,
        out_channels=num_classes,
        features=features,
        deep_supervision=False,
        act=("ReLU", {"inplace": True}),
        norm="batch",
        dropout=0.0,
        upsample="deconv",
    )


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--train-iters", type=int, default=2)
    parser.add_argument("--variant", default="fp32")
    args = parser.parse_args(argv)
    if not monai_available():
        print("MONAI is not installed: comparison skipped (pip install monai to run it).")
        return 0
    import monai

    common.set_threads(args.threads)
    device = torch.device(args.device)
    info = common.machine(str(device))
    info["monai"] = monai.__version__
    factories = {"ours_unetpp": lambda: speed.build("unetpp", "paper")}
    for key, features in MONAI_FEATURES.items():
        factories[key] = lambda f=features: monai_unetpp(f)
    for size in common.int_list(args.sizes):
        base = None
        for key, factory in factories.items():
            forward, train = speed.count_flops(factory, size)
            record = {
                "model": key,
                "features": list(MONAI_FEATURES.get(key, (32, 64, 128, 256, 512))),
                "size": size,
                "batch": args.batch,
                "device": str(device),
                "variant": args.variant,
                "params": keras_parameter_count(factory()),
                "flops_forward": forward,
                "flops_train": train,
            }
            record.update(
                speed.measure(
                    factory,
                    size,
                    args.batch,
                    device,
                    args.variant,
                    args.warmup,
                    args.iters,
                    args.train_iters,
                )
            )
            base = base or record
            ratio = record["infer_slices_per_s"] / base["infer_slices_per_s"]
            record["infer_ratio_to_ours"] = ratio
            if "train_slices_per_s" in record:
                record["train_ratio_to_ours"] = (
                    record["train_slices_per_s"] / base["train_slices_per_s"]
                )
            record["machine"] = info
            common.append_result(args.out / "monai_compare.jsonl", record)
            print(
                f"{size}px {key}: {record['params']:,} params, {forward / 1e9:.1f} GFLOP fwd, "
                f"infer {record['infer_slices_per_s']:.2f} sl/s "
                f"(x{record['infer_ratio_to_ours']:.2f}), "
                f"train {record.get('train_slices_per_s', float('nan')):.2f} sl/s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
