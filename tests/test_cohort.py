"""Cohort prediction: several workers, restartable, atomic outputs, the manifest."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_numsnet.config import PredictConfig, PreprocessConfig
from napari_numsnet.engine.checkpoint import Checkpoint, save_checkpoint
from napari_numsnet.engine.predict import predict_volume
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.labels import write_labels
from napari_numsnet.io.volume import read_volume, volume_from_array
from napari_numsnet.models import create_model
from napari_numsnet.workflows import cohort

SPACING = (2.5, 0.8, 0.8)  # mm, (z, h, w)


def _make_cohort(folder: Path, count: int, slices: int = 6, size: int = 24) -> list[Path]:
    """``count`` NIfTI stacks (binary noise) with a known spacing."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        image = rng.normal(size=(slices, size, size)).astype(np.float32)
        # a NIfTI file keeps its slices on the last axis
        volume = volume_from_array(np.moveaxis(image, 0, -1), stack_axis=2, spacing=SPACING)
        path = folder / f"case{i:02d}.nii.gz"
        write_labels(path, (image > 0).astype(np.uint8), volume.meta)  # any stack will do
        paths.append(path)
    return paths


@pytest.fixture
def checkpoint_file(tiny_config, tmp_path) -> Path:
    """An untrained tiny 3-class NUMSnet checkpoint on disk."""
    return _checkpoint_file(tiny_config, tmp_path, size=32)


def _checkpoint_file(tiny_config, tmp_path: Path, size: int) -> Path:
    model = create_model(tiny_config("numsnet", 3))
    checkpoint = Checkpoint.from_model(
        model, preprocess=PreprocessConfig(size=size), class_names=["background", "a", "b"]
    )
    return save_checkpoint(checkpoint, tmp_path / "model.numsnet.pt")


def _manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from napari_numsnet.cli import main; raise SystemExit(main())",
            *args]  # fmt: skip


def test_class_volumes_in_millilitres_from_the_spacing():
    labels = np.zeros((2, 10, 10), np.uint8)
    labels[0, :5, :4] = 1  # 20 voxels
    labels[1, :, :] = 2  # 100 voxels
    volumes = cohort.class_volumes_ml(labels, (2.0, 0.5, 0.5), {1: "a", 2: "b", 3: "c"})
    # one voxel: 2 * 0.5 * 0.5 = 0.5 mm^3 = 0.0005 mL
    assert volumes == pytest.approx({"a": 0.01, "b": 0.05, "c": 0.0})


def test_plan_refuses_two_inputs_with_the_same_output(tmp_path):
    a = _make_cohort(tmp_path / "a", 1)
    b = _make_cohort(tmp_path / "b", 1)
    with pytest.raises(NumsnetError, match="would both be written"):
        cohort.plan_cohort([*a, *b], tmp_path / "out")


def test_input_list_is_relative_to_its_folder_and_skips_comments(tmp_path):
    paths = _make_cohort(tmp_path / "cases", 2)
    listing = tmp_path / "cohort.txt"
    listing.write_text(f"# the cohort\ncases/{paths[0].name}\n\n{paths[1]}  # absolute\n")
    assert cohort.read_input_list(listing) == [tmp_path / "cases" / paths[0].name, paths[1]]
    with pytest.raises(NumsnetError, match="does not exist"):
        cohort.read_input_list(tmp_path / "missing.txt")


def test_cohort_writes_outputs_status_and_manifest_then_skips_what_is_done(
    checkpoint_file, tmp_path
):
    paths = _make_cohort(tmp_path / "in", 3)
    out = tmp_path / "out"
    config = PredictConfig(device="cpu")
    summary = cohort.predict_cohort(checkpoint_file, [tmp_path / "in"], out, config, workers=1)
    assert (summary.done, summary.failed, summary.skipped) == (3, 0, 0)

    rows = _manifest(out / "manifest.csv")
    assert [Path(r["input"]).name for r in rows] == [p.name for p in paths]
    model = _load(checkpoint_file).build_model()
    for path, row in zip(paths, rows, strict=True):
        labels = read_volume(row["output"]).data
        expected = predict_volume(
            model,
            read_volume(path).data,
            PreprocessConfig(size=32),
            config,
        ).labels
        np.testing.assert_array_equal(labels, expected)
        assert row["status"] == "done"
        assert float(row["spacing_z_mm"]) == pytest.approx(2.5)
        voxel_ml = 2.5 * 0.8 * 0.8 / 1000
        for value, name in ((1, "a"), (2, "b")):
            assert float(row[f"{name}_ml"]) == pytest.approx(
                (labels == value).sum() * voxel_ml, abs=1e-3
            )
        assert float(row["seconds"]) > 0

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*_labels.nii.gz")}
    again = cohort.predict_cohort(checkpoint_file, [tmp_path / "in"], out, config, workers=1)
    assert (again.done, again.skipped) == (3, 3)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*_labels.nii.gz")} == stamps


def _load(path: Path) -> Checkpoint:
    from napari_numsnet.engine.checkpoint import load_checkpoint

    return load_checkpoint(path)


def test_a_bad_stack_fails_alone_and_the_command_says_so(checkpoint_file, tmp_path, capsys):
    from napari_numsnet.cli import main

    _make_cohort(tmp_path / "in", 2)
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"not a nifti file")
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(checkpoint_file), "--input", str(tmp_path / "in")]
    code = main([*args, "--output", str(out), "--device", "cpu"])
    assert code == 1
    rows = {Path(r["input"]).name: r for r in _manifest(out / "manifest.csv")}
    assert rows["broken.nii.gz"]["status"] == "failed"
    assert rows["broken.nii.gz"]["error"]
    assert not (out / "broken_labels.nii.gz").exists()
    assert [rows[f"case{i:02d}.nii.gz"]["status"] for i in range(2)] == ["done", "done"]
    assert "2 done" in capsys.readouterr().out


def test_worker_count_must_be_positive():
    with pytest.raises(NumsnetError, match="--workers"):
        cohort.worker_devices("cpu", 0)
    assert cohort.worker_devices("cpu", 3) == ["cpu", "cpu", "cpu"]


@pytest.mark.slow
def test_killing_a_worker_then_restarting_finishes_without_redoing(tiny_config, tmp_path):
    """Two CPU workers; one is killed while it predicts; the restart finishes the rest."""
    checkpoint_file = _checkpoint_file(tiny_config, tmp_path, size=96)
    paths = _make_cohort(tmp_path / "in", 8, slices=60, size=96)
    out = tmp_path / "out"
    command = _cli(
        "predict", "--checkpoint", str(checkpoint_file), "--input", str(tmp_path / "in"),
        "--output", str(out), "--workers", "2", "--device", "cpu",
    )  # fmt: skip
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    status_folder = out / cohort.STATUS_FOLDER
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and run.poll() is None:
        records = [_read_json(p) for p in status_folder.glob("*.json")]
        done = [r for r in records if r and r["status"] == "done"]
        running = [r for r in records if r and r["status"] == "running"]
        if done and running:
            victim = running[0]
        time.sleep(0.05)
    assert victim is not None, run.communicate()[0]
    os.kill(victim["pid"], signal.SIGKILL)
    first_output = run.communicate(timeout=120)[0]
    assert run.returncode == 1, first_output
    assert victim["pid"] != run.pid

    first = {Path(r["input"]).name: r for r in _manifest(out / "manifest.csv")}
    # The killed worker was predicting the stack of its last "running" record, or the
    # next one if it finished that stack between our look and the kill.
    failed = [r for r in first.values() if r["status"] == "failed"]
    assert len(failed) == 1, first
    assert f"pid {victim['pid']}" in failed[0]["error"]
    assert "exit code -9" in failed[0]["error"]
    finished = {name for name, r in first.items() if r["status"] == "done"}
    assert finished and len(finished) < len(paths)
    stamps = {name: Path(first[name]["output"]).stat().st_mtime_ns for name in finished}

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    rows = {Path(r["input"]).name: r for r in _manifest(out / "manifest.csv")}
    assert all(r["status"] == "done" for r in rows.values())
    for name in finished:  # not redone
        assert Path(rows[name]["output"]).stat().st_mtime_ns == stamps[name]
    assert not list(out.glob(".*tmp*")), "a temporary file was left behind"

    model = _load(checkpoint_file).build_model()
    for path in paths:  # every output complete and equal to a single-process prediction
        expected = predict_volume(
            model, read_volume(path).data, PreprocessConfig(size=96), PredictConfig(device="cpu")
        ).labels
        np.testing.assert_array_equal(read_volume(rows[path.name]["output"]).data, expected)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
