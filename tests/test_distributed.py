"""Distributed training with PyTorch's own engine: gloo on CPU, two processes.

On CPUs BatchNorm cannot be synchronised (SyncBatchNorm needs a GPU), so the
equivalence test gives both processes the same images with different labels: the
BatchNorm statistics of each half then equal those of the whole batch, while the losses,
and so the gradients, differ; the weights match the single-process run only if the
gradients are really averaged across the processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.data.dataset import TrainingStack
from napari_numsnet.engine import distributed
from napari_numsnet.engine.checkpoint import load_checkpoint
from napari_numsnet.engine.run_saver import periodic_saver, resume_path, sibling
from napari_numsnet.engine.trainer import fit
from napari_numsnet.engine.validation import evaluate_stacks, label_names
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import create_model

MODEL = ModelConfig("unetpp", num_classes=2, widths=(4, 8, 8, 8, 8), dropout=0.0)
TRAINING = TrainConfig(
    epochs=1, batch_size=2, loss="ce", augment=False, amp=False, device="cpu", seed=0
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def images() -> np.ndarray:
    return np.random.default_rng(0).random((2, 32, 32), dtype=np.float32)


def labels(rank: int) -> np.ndarray:
    rng = np.random.default_rng(10 + rank)
    return (rng.random((2, 32, 32)) > 0.5 + 0.2 * rank).astype(np.int64)


def stack(rank: int) -> TrainingStack:
    return TrainingStack(images(), labels(rank), np.arange(2), f"rank {rank}")


def _die_at_step_3(event) -> None:
    if event.kind == "step" and event.step == 3:
        os._exit(3)


def _worker(rank: int, world: int, port: int, out: str, task: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    try:
        distributed.init_from_env(timeout_s=30)
        if task == "dead-peer" and rank == 1:
            os._exit(3)
        torch.manual_seed(0)
        model = create_model(MODEL)
        val = [stack(rank)] if task in ("metrics", "dies-midway") else ()
        training, hooks = TRAINING, {}
        if task == "dies-midway":  # rank 0 writes `last` every step; rank 1 dies at step 3
            training = TRAINING.replace(steps=6, val_every=1, checkpoint_seconds=0)
            hooks["on_checkpoint"] = periodic_saver(
                f"{out}/run.numsnet.pt", PreprocessConfig(size=32), ["background", "a"], training
            )
            if rank == 1:
                hooks["callback"] = lambda e: (
                    os._exit(3) if e.kind == "step" and e.step == 3 else None
                )
        result = fit(model, [stack(rank)], training, val_stacks=val, **hooks)
        torch.save(
            {"state": result.model.state_dict(), "record": result.record}, f"{out}/rank{rank}.pt"
        )
    except BaseException as exc:
        Path(f"{out}/rank{rank}.err").write_text(f"{exc}\n{traceback.format_exc()}")
    finally:
        distributed.shutdown()


def run_two(tmp_path: Path, task: str) -> None:
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, str(tmp_path), task)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert not p.is_alive(), "a training process hung"


def test_shard_deals_whole_stacks_evenly():
    items = ["a", "b", "c", "d", "e"]
    sizes = [10, 1, 1, 8, 2]
    shards = [distributed.shard(items, r, 2, sizes) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == items
    loads = [sum(sizes[items.index(i)] for i in s) for s in shards]
    assert abs(loads[0] - loads[1]) <= 2
    with pytest.raises(NumsnetError, match="at least 3 stacks"):
        distributed.shard(["a", "b"], 0, 3)


def test_two_processes_match_one_process_with_the_global_batch(tmp_path):
    run_two(tmp_path, "equal")
    assert not list(tmp_path.glob("*.err")), [p.read_text() for p in tmp_path.glob("*.err")]
    ranks = [torch.load(tmp_path / f"rank{r}.pt")["state"] for r in range(2)]
    torch.manual_seed(0)
    both = TrainingStack(
        np.concatenate([images(), images()]),
        np.concatenate([labels(0), labels(1)]),
        np.arange(4),
        "both",
    )
    single = fit(create_model(MODEL), [both], TRAINING.replace(batch_size=4)).model.state_dict()
    torch.manual_seed(0)
    alone = fit(create_model(MODEL), [stack(0)], TRAINING).model.state_dict()
    # Adam's first step is lr * g / (|g| + eps): float round-off in gradients near eps
    # shows up amplified, so weights are compared to a tenth of the learning rate, and a
    # gradient at round-off level (a few elements in a thousand; the summation order
    # differs between a batch of 4 and two averaged batches of 2, and with the memory
    # layout) may move its weight by up to 2 lr in either direction.
    tol = TRAINING.learning_rate / 10

    def close_to_adam_round_off(a: torch.Tensor, b: torch.Tensor) -> None:
        off = (a - b).abs()
        assert float(off.max()) <= 2 * TRAINING.learning_rate + 1e-6
        assert int((off > tol).sum()) <= max(1, off.numel() // 200), name

    # Parameters and running means; running variances are unbiased estimates over the
    # batch (n / (n - 1) with n = B * H * W) and so differ between batches of 2 and 4.
    parameters = {n for n, _ in create_model(MODEL).named_parameters()}
    compared = sorted(parameters)
    compared += [n for n in single if n.endswith("running_mean")]
    moved = 0
    for name in compared:
        weight = single[name]
        if weight.dtype.is_floating_point:
            # Running means: batch statistics, summed in another order with channels-last.
            same = 1e-6 if name in parameters else 1e-5
            torch.testing.assert_close(ranks[0][name], ranks[1][name], rtol=0, atol=same)
            close_to_adam_round_off(ranks[0][name], weight)
            moved += int(not torch.allclose(alone[name], weight, rtol=0, atol=tol))
    assert moved > 0, "without the gradient average rank 0 would have matched its half alone"


def test_validation_counts_are_summed_across_processes(tmp_path):
    run_two(tmp_path, "metrics")
    assert not list(tmp_path.glob("*.err")), [p.read_text() for p in tmp_path.glob("*.err")]
    saved = torch.load(tmp_path / "rank0.pt")
    model = create_model(MODEL)
    model.load_state_dict(saved["state"])
    names = label_names(None, 2, True)
    expected = evaluate_stacks(model, [stack(0), stack(1)], names, torch.device("cpu"))
    reported = saved["record"]["epochs"][-1]["val_dice"]
    assert reported.keys() == expected.keys()
    for name in expected:
        assert reported[name] == pytest.approx(expected[name], abs=1e-9)
    alone = evaluate_stacks(model, [stack(0)], names, torch.device("cpu"))
    assert any(alone[k] != pytest.approx(expected[k]) for k in expected)


def test_a_failed_process_ends_the_job_with_a_clear_error(tmp_path):
    run_two(tmp_path, "dead-peer")
    message = (tmp_path / "rank0.err").read_text()
    assert "another training process failed" in message
    assert "--resume" in message


def test_a_run_whose_peer_died_resumes_from_its_last_checkpoint(tmp_path):
    run_two(tmp_path, "dies-midway")
    assert "another training process failed" in (tmp_path / "rank0.err").read_text()
    assert not (tmp_path / "run.numsnet.pt").exists()  # the run never finished
    last = resume_path(tmp_path / "run.numsnet.pt", tmp_path / "run.numsnet.pt")
    assert last == sibling(tmp_path / "run.numsnet.pt", "last")
    saved = load_checkpoint(last)
    assert 1 <= saved.record["epochs"][-1]["step"] <= 3  # written before the failure
    assert saved.optimizer_state
    result = fit(
        saved.build_model(),
        [stack(0), stack(1)],
        TRAINING.replace(steps=2),
        optimizer_state=saved.optimizer_state,
        record=saved.record,
    )
    # It went on from where the failed run's last checkpoint stood.
    assert result.record["epochs"][-1]["epoch"] == saved.epochs_done + 1
    assert result.record["steps_done"] == saved.record["steps_done"] + 2


@pytest.mark.slow
def test_numsnet_train_under_torchrun_then_resume_on_one_process(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for k in range(2):
        img = rng.normal(0, 1, (4, 32, 32)).astype(np.float32)
        lab = np.zeros((4, 32, 32), np.uint8)
        lab[:, 8 + k : 20, 10:22] = 1
        img[lab == 1] += 3
        np.save(tmp_path / f"img{k}.npy", img)
        np.save(tmp_path / f"lab{k}.npy", lab)
        paths.append((tmp_path / f"img{k}.npy", tmp_path / f"lab{k}.npy"))
    common = [
        "--model",
        "unetpp",
        "--widths",
        "4,8,8,8,8",
        "--size",
        "32",
        "--batch-size",
        "2",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "m.numsnet.pt"),
        "--image",
        *[str(i) for i, _ in paths],
        "--labels",
        *[str(lab) for _, lab in paths],
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "napari_numsnet.cli",
        "train",
        *common,
    ]
    done = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("checkpoint:") == 1  # rank 0 alone writes
    first = load_checkpoint(tmp_path / "m.numsnet.pt")
    assert first.epochs_done == 1
    from napari_numsnet.cli import main

    # The checkpoint's model continues (--model beside --resume is refused), into a new
    # file (an output that is one of the inputs is refused).
    resumed = [*common[4:-6], "--resume", str(tmp_path / "m.numsnet.pt"), *common[-6:]]
    resumed[resumed.index("--output") + 1] = str(tmp_path / "m2.numsnet.pt")
    assert main(["train", *resumed]) == 0
    assert load_checkpoint(tmp_path / "m2.numsnet.pt").epochs_done == 2
