"""Cohort jobs: the input list, the plan, status records, class volumes, one job's
prediction and the manifest (the worker pool is ``napari_numsnet.workflows.cohort``)."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.atomic import atomic_write_bytes, remove_own_temporaries
from napari_numsnet.io.locks import file_digest, matches_digest

STATUS_FOLDER = ".numsnet-status"
MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class CohortJob:
    """One stack of the cohort: where it comes from and where its results go."""

    input: Path
    output: Path
    status: Path

    @property
    def name(self) -> str:
        return self.output.name


@dataclass
class CohortSummary:
    """What a cohort run did; ``records`` holds one status record per job, input order."""

    records: list[dict[str, Any]] = field(default_factory=list)
    manifest: Path | None = None

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def skipped(self) -> int:
        return sum(bool(r.get("skipped")) for r in self.records)


# --------------------------------------------------------------------------- planning


def read_input_list(path: str | Path) -> list[Path]:
    """Paths listed one per line in a text file (``#`` starts a comment).

    Relative paths are taken relative to the list file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise NumsnetError(
            f"The input list {path} does not exist.",
            "Give a text file with one image path per line.",
        )
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            item = Path(line)
            items.append(item if item.is_absolute() else path.parent / item)
    if not items:
        raise NumsnetError(f"The input list {path} names no file.", "Add one path per line.")
    return items


def plan_cohort(inputs: Sequence[str | Path], output: str | Path) -> list[CohortJob]:
    """One job per stack of ``inputs`` (files, or folders searched one level deep).

    Raises
    ------
    NumsnetError
        As :func:`napari_numsnet.workflows.predict_files.prediction_targets`.
    """
    from napari_numsnet.workflows.predict_files import prediction_targets

    status_folder = Path(output) / STATUS_FOLDER
    return [
        CohortJob(path, target, status_folder / f"{target.name}.json")
        for path, target in prediction_targets(inputs, output)
    ]


def read_status(job: CohortJob) -> dict[str, Any] | None:
    """The job's status record, or ``None`` when there is none or it cannot be read."""
    try:
        return json.loads(job.status.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_done(job: CohortJob) -> bool:
    """The status record says ``done`` and the output still has its recorded size and hash."""
    status = read_status(job)
    if status is None or status.get("status") != "done":
        return False
    return matches_digest(job.output, status.get("output_file") or {})


def _write_status(job: CohortJob, record: dict[str, Any]) -> None:
    """Write the status record; a failure to write it (disk full) is reported, not raised."""
    try:
        atomic_write_bytes(job.status, json.dumps(record, indent=1).encode("utf-8"))
    except OSError as exc:
        record["status_error"] = str(exc)


def _remove_stale_temporaries(jobs: Sequence[CohortJob]) -> None:
    """Delete the temporary files a killed worker may have left beside the outputs."""
    folders = {job.output.parent for job in jobs} | {job.status.parent for job in jobs}
    for folder in folders:  # only the tool's own temporaries of dead processes
        remove_own_temporaries(folder)


# --------------------------------------------------------------------------- one volume


def class_value_names(predictor: Any) -> dict[int, str]:
    """Label value -> class name for the predictor's classes (background left out)."""
    model_config = predictor.model_config
    names = list(predictor.class_names)
    if not model_config.exclusive and len(names) == model_config.num_classes:
        return {v + 1: names[v] for v in range(len(names))}  # one name per plane
    return {v: names[v] for v in range(1, len(names))}  # names[0] is the background


def class_volumes_ml(
    labels: np.ndarray, spacing_mm: Sequence[float], values: dict[int, str]
) -> dict[str, float]:
    """Volume of every class in millilitres.

    Parameters
    ----------
    labels
        ``(Z, H, W)`` integer label stack.
    spacing_mm
        Voxel size ``(z, h, w)`` in mm.
    values
        Label value -> class name.
    """
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=max(values, default=0) + 1)
    return {name: float(counts[v]) * voxel_ml for v, name in values.items()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def predict_job(
    predict: Callable[[np.ndarray], Any],
    job: CohortJob,
    values: dict[int, str],
    stack_axis: int | None,
) -> dict[str, Any]:
    """Predict one stack, write its labels (and probabilities) atomically.

    Returns the result part of its status record: slices, spacing, class volumes in
    mL (``values``: label value -> class name) and seconds.
    """
    from napari_numsnet.io.labels import write_labels
    from napari_numsnet.io.volume import read_volume
    from napari_numsnet.workflows.predict_files import write_probabilities

    start = time.perf_counter()
    volume = read_volume(job.input, stack_axis=stack_axis)
    result = predict(volume.data)
    write_labels(job.output, result.labels, volume.meta)
    if result.probabilities is not None:
        write_probabilities(job.output, result.probabilities)
    return {
        "status": "done",
        "output_file": file_digest(job.output),
        "slices": int(volume.data.shape[0]),
        "spacing_mm": [float(s) for s in volume.meta.spacing],
        "spacing_known": volume.meta.source_format == "nifti",
        "volumes_ml": class_volumes_ml(result.labels, volume.meta.spacing, values),
        "seconds": round(time.perf_counter() - start, 3),
    }


def write_manifest(path: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """Write ``manifest.csv`` atomically: one row per stack, one ``<class>_ml`` column
    per class, and the timing."""
    classes: list[str] = []
    for record in records:
        for name in record.get("volumes_ml", {}):
            if name not in classes:
                classes.append(name)
    columns = [
        "input",
        "output",
        "status",
        "slices",
        "spacing_z_mm",
        "spacing_y_mm",
        "spacing_x_mm",
        "spacing_known",
        *(f"{c}_ml" for c in classes),
        "seconds",
        "worker",
        "pid",
        "device",
        "started",
        "finished",
        "error",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for record in records:
        row = dict(record)
        for axis, value in zip("zyx", record.get("spacing_mm", ()), strict=False):
            row[f"spacing_{axis}_mm"] = value
        for name, ml in record.get("volumes_ml", {}).items():
            row[f"{name}_ml"] = f"{ml:.3f}"
        writer.writerow(row)
    return atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
