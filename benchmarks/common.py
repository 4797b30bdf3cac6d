"""Helpers shared by the benchmark scripts: paths, threads, machine, results on disk.

Every script appends one JSON object per finished run to ``<out>/<name>.jsonl`` as soon
as the run ends, so that an interrupted benchmark keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Repository root (the folder holding ``benchmarks/``).
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Default data root: ``../shared/data`` relative to the repository root.
DEFAULT_DATA_ROOT = REPO_ROOT / ".." / "shared" / "data"
#: Default folder of the results.
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"

#: The models of the registry, in the order of the tables.
ALL_MODELS = ("unet", "wunet", "unetpp", "numsnet", "nums_all", "drsegunet")
#: The other systems of the registry (UNet#, CHS-Net's RAIU-Net, the 3D MSDS-UNet).
OTHER_MODELS = ("unetsharp", "raiunet", "msdsunet")
#: Table titles of the registry names and of the benchmark-only rows.
TITLES = {
    "unet": "UNet",
    "wunet": "wUNet",
    "unetpp": "UNet++",
    "numsnet": "NUMSnet",
    "nums_all": "NUMS-all",
    "drsegunet": "DRSegUNet",
    "unetsharp": "UNet#",
    "unetsharp_fast4": "UNet# fast, head X(0,4)",
    "unetsharp_fast3": "UNet# fast, head X(0,3)",
    "unetsharp_fast2": "UNet# fast, head X(0,2)",
    "unetsharp_fast1": "UNet# fast, head X(0,1)",
    "raiunet": "RAIU-Net",
    "cascade:raiunet+raiunet": "CHS-Net cascade (RAIU-Net + RAIU-Net)",
    "msdsunet": "MSDS-UNet",
}
#: Row order of the tables (names not listed come last).
TABLE_ORDER = tuple(TITLES)


def order(model: str) -> int:
    """Position of ``model`` in the tables."""
    return TABLE_ORDER.index(model) if model in TABLE_ORDER else len(TABLE_ORDER)


def title(model: str) -> str:
    """Table title of ``model`` (the name itself when it has none)."""
    return TITLES.get(model, model)


def base_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every script takes: ``--data-root``, ``--out``, ``--threads``, ``--device``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="folder holding acdc/ and covid_medseg100/ (default: ../shared/data)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="results folder (JSON lines, tables)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    return parser


#: Settings of the training recipe that the accuracy scripts take from the command line
#: (``--rotation``, ``--zoom``, ...); an option left out keeps the preset's value.
RECIPE_OPTIONS = (
    "rotation",
    "zoom",
    "run_rotation",
    "run_zoom",
    "cpu_bf16",
    "reverse_runs",
    "semi_supervised",
    "strong_view",
    "confidence",
    "patch_size",
    "class_weights",
)


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :data:`RECIPE_OPTIONS` (default ``None``: the preset's value)."""
    from napari_numsnet.engine.recipe import STRONG_VIEWS

    parser.add_argument(
        "--rotation", type=float, default=None, help="the affine's rotation half-range, radians"
    )
    parser.add_argument(
        "--zoom",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=None,
        help="the affine's scale range LOW,HIGH (below 1 magnifies)",
    )
    parser.add_argument(
        "--run-rotation",
        type=float,
        default=None,
        help="NUMSnet family: the affine's rotation half-range for a run of slices, radians",
    )
    parser.add_argument(
        "--run-zoom",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=None,
        help="NUMSnet family: the affine's scale range LOW,HIGH for a run of slices",
    )
    parser.add_argument(
        "--cpu-bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 autocast where the CPU computes it natively (default: the preset's)",
    )
    parser.add_argument(
        "--reverse-runs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NUMSnet family: runs in both orders, predicted with both directions averaged "
        "(default: the preset's)",
    )
    parser.add_argument(
        "--semi-supervised", type=float, default=None, help="semi-supervised term's weight"
    )
    parser.add_argument(
        "--strong-view",
        choices=STRONG_VIEWS,
        default=None,
        help="the semi-supervised term's strong view (UniMatch's adds CutMix)",
    )
    parser.add_argument(
        "--confidence", type=float, default=None, help="pseudo-label confidence threshold"
    )
    parser.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help="train on random square patches of this side, px (0: whole slices)",
    )
    add_class_weights_argument(parser)
    parser.add_argument(
        "--default-layout",
        action="store_true",
        help="train and predict in the default memory layout, not channels-last on the CPU "
        "(to measure what channels-last does)",
    )


def add_class_weights_argument(parser: argparse.ArgumentParser) -> None:
    """``--class-weights`` (default ``None``: the preset's ``TrainConfig.class_weights``)."""
    from napari_numsnet.engine.class_weights import CLASS_WEIGHTINGS

    parser.add_argument(
        "--class-weights",
        choices=CLASS_WEIGHTINGS,
        default=None,
        help="weigh the cross-entropy by class (default: the preset's)",
    )


def layout(args: argparse.Namespace) -> str:
    """The memory layout a run trained and predicted in, for its record."""
    return "default" if args.default_layout else "channels_last on the CPU"


def apply_layout(args: argparse.Namespace) -> None:
    """With ``--default-layout``, make training and prediction place models with a plain
    ``.to(device)``, as before ``engine.device.place_model`` chose channels-last."""
    if not args.default_layout:
        return
    from napari_numsnet.engine import predict, trainer

    def plain(model: Any, device: Any) -> Any:
        return model.to(device)

    trainer.place_model = plain  # type: ignore[assignment]
    predict.place_model = plain  # type: ignore[assignment]


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The :data:`RECIPE_OPTIONS` given on the command line, for ``TrainConfig.replace``."""
    return {key: getattr(args, key) for key in RECIPE_OPTIONS if getattr(args, key) is not None}


def csv_list(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (empty items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def int_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``."""
    return [int(item) for item in csv_list(text)]


def set_threads(n: int) -> None:
    """Limit torch (and the BLAS libraries) to ``n`` CPU threads."""
    import torch

    torch.set_num_threads(max(1, n))
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


def machine(device: str = "cpu") -> dict[str, Any]:
    """The machine a result comes from: CPU, threads, torch version, GPU when used."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": _dt.date.today().isoformat(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def load_average() -> list[float]:
    """The machine's 1, 5 and 15-minute load averages (``[]`` where unknown)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def median_range(values: Sequence[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "n", "values"}`` of timed iterations (NaNs left out)."""
    arr = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=float)
    if arr.size == 0:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "median": float(np.median(arr)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n": int(arr.size),
        "values": [float(v) for v in arr],
    }


def fmt_range(stats: dict[str, Any], digits: int = 2) -> str:
    """``12.3 (11.9-12.8)``: median and range; ``n/a`` without values."""
    if not stats.get("n"):
        return "n/a"
    d = digits
    return f"{stats['median']:.{d}f} ({stats['min']:.{d}f}-{stats['max']:.{d}f})"


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (created with its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=_jsonable) + "\n")


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of ``path`` (an empty list when the file does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count, NaNs left out."""
    arr = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan"), 0
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std, int(arr.size)


def fmt(mean: float, std: float, n: int, digits: int = 3) -> str:
    """``0.812 ± 0.010 (3)``; ``n/a`` without values."""
    if n == 0:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({n})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
