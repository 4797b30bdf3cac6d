"""Choosing and describing the compute device, mixed precision and seeding."""

from __future__ import annotations

import contextlib
import platform
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from napari_numsnet.engine import threads
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models.base import ModelKind


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device strings usable here, e.g. ``["cuda:0", "cpu"]``, best first."""
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def select_device(requested: str = "auto") -> torch.device:
    """Return the torch device to compute on.

    Parameters
    ----------
    requested
        ``"auto"``: CUDA if available, then Apple MPS, else the CPU. Otherwise a torch
        device string such as ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``.

    Returns
    -------
    torch.device

    Raises
    ------
    NumsnetError
        If the string is no device or the device is not available here; the message
        lists the devices that are.
    """
    devices = available_devices()
    fix = f"Choose 'auto' or one of the available devices: {', '.join(devices)}."
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else devices[0])
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise NumsnetError(f"{requested!r} is not a device name.", fix) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count and (device.index is None or device.index < count):
            return device
    elif device.type == "mps" and _mps_available():
        return device
    raise NumsnetError(f"Device {requested!r} is not available on this machine.", fix)


def describe_device(device: torch.device | str) -> str:
    """One line naming the device for the user.

    Examples: ``"NVIDIA H100 80GB HBM3 (79.1 GiB)"``, ``"Apple MPS"``,
    ``"CPU, 1 thread (2 cores, 1 busy), x86_64"`` (with the thread policy of
    :mod:`~napari_numsnet.engine.threads` in force), ``"CPU, 8 threads, x86_64"``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"{props.name} ({props.total_memory / 2**30:.1f} GiB)"
    if device.type == "mps":
        return "Apple MPS"
    if device.type == "cpu":
        choice = threads.current()
        count = torch.get_num_threads()
        details = [choice.describe() if choice else f"{count} thread{'s' * (count != 1)}"]
        if platform.processor():
            details.append(platform.processor())
        return ", ".join(["CPU", *details])
    return str(device)


def cpu_computes_bf16() -> bool:
    """``True`` where this CPU has bfloat16 matrix units (AMX tiles), where a training step
    under bfloat16 autocast is about 1.4 times cheaper than in float32.

    With AVX-512 BF16 alone a step costs about what it does in float32 (a few percent
    more), and without either it is emulated and about 20 times slower
    (``benchmarks/README.md``, sections 0 and 11): both train in float32.
    """
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without this probe: assume none
        return False


def place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` moved to ``device``, in channels-last memory on a CPU (slice and sequence
    models; 3D models stay as they are), where oneDNN's convolutions are about 1.15 times
    faster in training and 1.25 times in inference than on the default layout
    (``benchmarks/README.md``, section 0). The same values either way; returns ``model``.
    """
    model = model.to(device)
    if device.type == "cpu" and model.kind is not ModelKind.VOLUME:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def training_dtype(
    device: torch.device, kind: ModelKind, amp: bool, cpu_bf16: bool
) -> torch.dtype | None:
    """The autocast dtype of a training run (``None``: float32), from the run's ``amp``
    (GPUs) and ``cpu_bf16`` (CPUs) settings and the model's ``kind``.

    3D models stay float32 on a CPU: bfloat16 was measured on slice models only, and a
    tiny MSDS-UNet under it gave an intermittent NaN loss on a Xeon with AVX-512 BF16.
    """
    if device.type == "cpu":
        bf16 = cpu_bf16 and kind is not ModelKind.VOLUME
        return amp_dtype(device, cpu_bf16=True) if bf16 else None
    return amp_dtype(device) if amp else None


def amp_dtype(device: torch.device | str, cpu_bf16: bool = False) -> torch.dtype | None:
    """Autocast dtype for mixed precision on ``device``, or ``None`` to train in float32.

    bfloat16 on CUDA devices that support it, else float16 on CUDA; on a CPU bfloat16 when
    ``cpu_bf16`` is asked for and the CPU computes it natively (:func:`cpu_computes_bf16`);
    ``None`` otherwise and on MPS.
    """
    device = torch.device(device)
    if device.type == "cpu" and cpu_bf16 and cpu_computes_bf16():
        return torch.bfloat16
    if device.type != "cuda":
        return None
    with torch.cuda.device(device):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy, torch and every CUDA device with ``seed``.

    Parameters
    ----------
    seed
        Integer in ``[0, 2**32)``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise NumsnetError(
            f"Seed must be an integer in [0, 2**32), got {seed!r}.",
            "Pass a non-negative integer seed.",
        )
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global generator is what gets seeded
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@contextlib.contextmanager
def preserved_random_state(device: torch.device) -> Iterator[None]:
    """Run the block and then put Python's ``random``, numpy's global generator and
    torch's (CPU and, on a CUDA ``device``, that device's) back as they were.

    Parameters
    ----------
    device
        The training device; its CUDA generator is kept too when it is a GPU.
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()  # noqa: NPY002 - the legacy global generator
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)  # noqa: NPY002
