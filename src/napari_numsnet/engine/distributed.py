"""Several processes, one training: PyTorch's DistributedDataParallel under ``torchrun``.

``numsnet train`` reads the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and, when there is more than one
process, joins the process group (NCCL on GPUs, gloo on CPUs), takes its share of the
stacks (whole stacks, so the NUMSnet slice order is kept inside each shard), wraps the
model in DistributedDataParallel, reduces losses and validation counts across processes,
and lets rank 0 alone write the checkpoint. Nothing here is home-made: the gradient
all-reduce, the rendezvous and the supervision of failed workers are PyTorch's.

On GPUs BatchNorm layers become SyncBatchNorm, so the statistics are those of the global
batch. SyncBatchNorm needs a GPU: on CPUs each process normalises its own batch, as plain
DDP does.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from napari_numsnet.errors import NumsnetError

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return not active() or dist.get_rank() == 0


def init_from_env(timeout_s: float = 600.0, device: str = "auto") -> DistributedContext | None:
    """Join the process group described by torchrun's variables; ``None`` for one process.

    Parameters
    ----------
    timeout_s
        How long a collective waits for a missing process before failing (seconds).
    device
        ``auto``: GPU ``LOCAL_RANK`` where CUDA exists, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise NumsnetError(
                f"Process {rank} has local rank {local_rank} but this node has "
                f"{torch.cuda.device_count()} GPU(s).",
                "Start at most one process per GPU (torchrun --nproc-per-node).",
            )
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        )
    return DistributedContext(rank, world, local_rank, chosen)


def shard(
    items: Sequence[T], rank: int, world_size: int, sizes: Sequence[int] | None = None
) -> list[T]:
    """This rank's share of whole ``items`` (stacks), balanced by ``sizes``.

    Items are dealt largest first to the rank with the least so far, so every rank's
    share is as even as whole stacks allow.
    """
    if len(items) < world_size:
        raise NumsnetError(
            f"{len(items)} stack(s) for {world_size} processes: data are shared by whole "
            "stacks, so every process needs at least one.",
            f"Give at least {world_size} stacks, or start at most {len(items)} processes.",
        )
    sizes = list(sizes) if sizes is not None else [1] * len(items)
    load = [0] * world_size
    owner = [0] * len(items)
    for index in sorted(range(len(items)), key=lambda i: (-sizes[i], i)):
        target = min(range(world_size), key=lambda r: (load[r], r))
        owner[index] = target
        load[target] += sizes[index]
    return [item for item, o in zip(items, owner, strict=True) if o == rank]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` (SyncBatchNorm on GPUs)."""
    try:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
        return nn.parallel.DistributedDataParallel(model)
    except RuntimeError as exc:  # the initial broadcast of the weights met a dead peer
        if is_peer_failure(exc):
            raise failed_peer(exc) from exc
        raise


def all_reduce(values: np.ndarray | float, op: str = "sum") -> np.ndarray:
    """Sum, mean or min of ``values`` over the processes (unchanged for one process)."""
    array = np.asarray(values, dtype=np.float64)
    if not active():
        return array
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.as_tensor(array, device=backend_device)
    reduce_op = dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM
    try:
        dist.all_reduce(tensor, op=reduce_op)
    except Exception as exc:
        raise failed_peer(exc) from exc
    result = tensor.cpu().numpy()
    return result / dist.get_world_size() if op == "mean" else result


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says that another process of the job failed or vanished."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return any(k in text for k in ("gloo", "NCCL", "closed by peer", "Connection reset"))


def failed_peer(exc: BaseException) -> NumsnetError:
    """The error every surviving process raises when another one fails."""
    rank = dist.get_rank() if dist.is_initialized() else "?"
    return NumsnetError(
        f"Process {rank}: another training process failed or stopped answering "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).",
        "Look for the first error in the log of the failed process; fix it and start the "
        "job again (resume from the last checkpoint with --resume).",
    )


def barrier() -> None:
    """Wait for every process (no-op for one)."""
    if active():
        try:
            dist.barrier()
        except Exception as exc:
            raise failed_peer(exc) from exc


def shutdown() -> None:
    """Leave the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
