"""Cohort prediction: segment thousands of stacks with several worker processes.

Every input stack becomes one job. A job's result is written atomically (the label
stack with the input's geometry), then its status record ``<output>/.numsnet-status/
<name>.json`` (status, class volumes in mL, timing, worker, pid), also atomically. A
stack whose output and ``done`` status both exist is skipped, so a cohort run that was
interrupted (a killed worker, a power cut) is restarted with the same command and
finishes the rest without redoing or corrupting anything. ``manifest.csv`` in the
output folder summarises every job.

Workers are spawned processes (CUDA cannot be forked), one per GPU by default, or
several CPU processes sharing the cores. Each worker talks to the parent through its
own pipe, so a worker killed at any moment cannot corrupt a shared queue; the stack it
was predicting is marked ``failed`` and the others carry on.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, cast

from napari_numsnet.config import PredictConfig
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.locks import StackLock, exit_with_parent
from napari_numsnet.workflows.cohort_jobs import (
    MANIFEST_NAME,
    STATUS_FOLDER,
    CohortJob,
    CohortSummary,
    _now,
    _remove_stale_temporaries,
    _write_status,
    class_value_names,
    class_volumes_ml,
    is_done,
    plan_cohort,
    predict_job,
    read_input_list,
    read_status,
    write_manifest,
)

__all__ = [
    "MANIFEST_NAME",
    "STATUS_FOLDER",
    "CohortJob",
    "CohortSummary",
    "class_value_names",
    "class_volumes_ml",
    "is_done",
    "plan_cohort",
    "predict_cohort",
    "predict_job",
    "read_input_list",
    "read_status",
    "worker_devices",
    "write_manifest",
]


class _Runner:
    """Runs jobs in this process with one predictor, writing the status records."""

    def __init__(
        self,
        predictor: Any,
        config: PredictConfig,
        stack_axis: int | None,
        probabilities: bool,
        worker: int,
    ) -> None:
        from napari_numsnet.workflows.predict_files import make_predictor

        self.predict = make_predictor(predictor, config, probabilities)
        self.values = class_value_names(predictor)
        self.stack_axis = stack_axis
        self.base = {"worker": worker, "pid": os.getpid(), "device": config.device}

    def __call__(self, job: CohortJob) -> dict[str, Any]:
        """Run one job; a failing stack is recorded and never stops the cohort."""
        base = {"input": str(job.input), "output": str(job.output), **self.base}
        lock = StackLock(job.status.with_name(job.status.name + ".lock"))
        if not lock.acquire():  # another run is predicting this stack right now
            return {**base, "status": "pending", "error": f"locked by pid {lock.holder()}"}
        try:
            base["started"] = _now()
            _write_status(job, {**base, "status": "running"})
            try:
                record = {**base, **predict_job(self.predict, job, self.values, self.stack_axis)}
            except Exception as exc:
                record = {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            record["finished"] = _now()
            _write_status(job, record)
        finally:
            lock.release()
        return record


# --------------------------------------------------------------------------- workers


def _worker_main(
    worker: int,
    checkpoint_path: str,
    config: dict[str, Any],
    threads: int,
    stack_axis: int | None,
    probabilities: bool,
    conn: Connection,
) -> None:
    """Entry point of a worker process: receive jobs on ``conn``, answer with records."""
    exit_with_parent()  # a worker never outlives a killed parent
    import torch

    from napari_numsnet.workflows.cascade import load_predictor

    torch.set_num_threads(threads)
    try:
        predictor = load_predictor(checkpoint_path)
        run = _Runner(
            predictor, PredictConfig.from_dict(config), stack_axis, probabilities, worker
        )
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        conn.send(("ready", os.getpid()))
        while True:
            job = conn.recv()
            if job is None:
                return
            conn.send(("record", run(job)))
    except (EOFError, OSError):  # the parent is gone: end quietly
        return


def worker_devices(device: str, workers: int | None) -> list[str]:
    """The device of each worker: one per GPU by default, else CPU processes.

    ``device="auto"`` uses every CUDA GPU (one worker each unless ``workers`` says
    otherwise, round-robin), else one worker on MPS, else one CPU worker.
    """
    import torch

    if workers is not None and workers < 1:
        raise NumsnetError(f"--workers must be 1 or more, got {workers}.", "Use --workers 1.")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device in ("auto", "cuda") and gpus:
        count = workers or gpus
        return [f"cuda:{i % gpus}" for i in range(count)]
    if device == "auto":
        from napari_numsnet.engine.device import select_device

        device = select_device("auto").type
    return [device] * (workers or 1)


ProgressCallback = Callable[[dict[str, Any], int, int], None]


def predict_cohort(
    checkpoint_path: str | Path,
    inputs: Sequence[str | Path],
    output: str | Path,
    config: PredictConfig = PredictConfig(),
    workers: int | None = None,
    stack_axis: int | None = None,
    probabilities: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> CohortSummary:
    """Segment every stack of ``inputs`` into the folder ``output``.

    Parameters
    ----------
    checkpoint_path
        A ``*.numsnet.pt`` checkpoint or a cascade; each worker loads it itself.
    inputs
        Files and folders (searched one level deep).
    output
        Output folder: ``<name>_labels.<ext>`` per stack, the status records and
        ``manifest.csv``.
    config
        How to predict; ``config.device`` chooses the workers' devices (see
        :func:`worker_devices`).
    workers
        Worker processes; default one per GPU, or one on CPU. With one worker the
        stacks are predicted in this process.
    overwrite
        Predict stacks that are already done again.
    progress
        Called as ``progress(record, finished, total)`` after each stack.

    Returns
    -------
    CohortSummary
        One record per stack (``done``, ``failed`` or ``pending``).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / STATUS_FOLDER).mkdir(exist_ok=True)
    jobs = plan_cohort(inputs, output)
    _remove_stale_temporaries(jobs)
    records: dict[CohortJob, dict[str, Any]] = {}
    todo = []
    for job in jobs:
        if not overwrite and is_done(job):
            records[job] = {**(read_status(job) or {}), "skipped": True}
        else:
            todo.append(job)
    total, finished = len(jobs), len(records)

    def collect(job: CohortJob, record: dict[str, Any]) -> None:
        nonlocal finished
        records[job] = record
        finished += 1
        if progress is not None:
            progress(record, finished, total)

    devices = worker_devices(config.device, workers)[: max(1, len(todo))]
    if len(devices) == 1:
        _predict_inline(
            checkpoint_path,
            todo,
            config.replace(device=devices[0]),
            stack_axis,
            probabilities,
            collect,
        )
    elif todo:
        _predict_in_workers(
            checkpoint_path, todo, config, devices, stack_axis, probabilities, collect
        )
    summary = CohortSummary(
        records=[
            records.get(
                job, {"input": str(job.input), "output": str(job.output), "status": "pending"}
            )
            for job in jobs
        ]
    )
    summary.manifest = write_manifest(output / MANIFEST_NAME, summary.records)
    return summary


def _predict_inline(
    checkpoint_path: str | Path,
    jobs: Sequence[CohortJob],
    config: PredictConfig,
    stack_axis: int | None,
    probabilities: bool,
    collect: Callable[[CohortJob, dict[str, Any]], None],
) -> None:
    from napari_numsnet.workflows.cascade import load_predictor

    if not jobs:
        return
    run = _Runner(load_predictor(checkpoint_path), config, stack_axis, probabilities, worker=0)
    for job in jobs:
        collect(job, run(job))


def _predict_in_workers(
    checkpoint_path: str | Path,
    jobs: Sequence[CohortJob],
    config: PredictConfig,
    devices: Sequence[str],
    stack_axis: int | None,
    probabilities: bool,
    collect: Callable[[CohortJob, dict[str, Any]], None],
) -> None:
    """Hand the jobs out one at a time to spawned workers until none is left."""
    ctx = mp.get_context("spawn")
    cpu_workers = sum(d == "cpu" for d in devices)
    from napari_numsnet.engine.threads import worker_threads

    threads = worker_threads(cpu_workers)  # the thread policy's count, shared
    pending = list(reversed(jobs))
    conns: dict[Connection, int] = {}
    processes, in_flight = [], {}
    for index, device in enumerate(devices):
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_worker_main,
            args=(
                index,
                str(checkpoint_path),
                config.replace(device=device).to_dict(),
                threads,
                stack_axis,
                probabilities,
                child,
            ),
            daemon=True,
        )
        process.start()
        child.close()
        processes.append(process)
        conns[parent] = index
    errors = []

    def hand_out(conn: Connection, index: int) -> None:
        if pending:
            in_flight[index] = pending.pop()
        else:
            in_flight.pop(index, None)
        with contextlib.suppress(OSError):  # a dead worker: its pipe reports EOF next
            conn.send(in_flight.get(index))

    try:
        while conns:
            for ready in wait(list(conns)):
                conn = cast(Connection, ready)
                index = conns[conn]
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):  # the worker died
                    del conns[conn]
                    processes[index].join(timeout=5)
                    job = in_flight.pop(index, None)
                    if job is not None:
                        record = {
                            "input": str(job.input),
                            "output": str(job.output),
                            "status": "failed",
                            "worker": index,
                            "pid": processes[index].pid,
                            "finished": _now(),
                            "error": f"worker {index} (pid {processes[index].pid}) ended "
                            f"with exit code {processes[index].exitcode} while "
                            "predicting this stack; run the command again to retry",
                        }
                        _write_status(job, record)
                        collect(job, record)
                    continue
                if kind == "error":
                    errors.append(payload)
                    del conns[conn]
                    continue
                if kind == "record":
                    collect(in_flight[index], payload)
                hand_out(conn, index)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    if errors and len(errors) == len(devices):
        raise NumsnetError(
            f"No worker could load the checkpoint: {errors[0]}",
            "Check the --checkpoint path and that it was made by numsnet.",
        )


# --------------------------------------------------------------------------- manifest
