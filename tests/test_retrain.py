"""Retrain after a correction: step budget, continued weights, Dice before and after."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.errors import NumsnetError
from napari_numsnet.workflows.retrain import RetrainResult, retrain
from toys import square_images

#: Filters per depth of the tiny test models (as in conftest.py).
TINY_WIDTHS = (4, 8, 8, 8, 8)


TRAINING = TrainConfig(
    epochs=1, batch_size=2, learning_rate=1e-2, augment=False, amp=False, device="cpu"
)


@pytest.fixture(scope="module")
def first_model() -> tuple[pipeline.Checkpoint, pipeline.AnnotatedStack]:
    """A tiny UNet after one epoch on 3 slices of 10; slices 8 and 9 held out."""
    images, labels = square_images(n=10, seed=5)
    stack = pipeline.AnnotatedStack(images, labels, [2, 5, 8, 9], val_slices=[8, 9], name="sq")
    checkpoint = pipeline.train(
        pipeline.AnnotatedStack(images, labels, [2, 5], name="sq"),
        ModelConfig("unet", num_classes=2, widths=TINY_WIDTHS),
        TRAINING,
        PreprocessConfig(size=32),
    )
    return checkpoint, stack


def test_retrain_runs_the_budget_and_improves_validation_dice(first_model) -> None:
    checkpoint, stack = first_model
    events = []
    result = retrain(checkpoint, stack, budget_steps=40, callback=events.append)
    assert isinstance(result, RetrainResult)
    assert result.steps == 40
    assert sum(e.kind == "step" for e in events) == 40
    assert set(result.dice_before) == set(result.dice_after) >= {"class 1"}
    # One epoch on two slices is far from done; 40 more steps (at a tenth of the peak
    # learning rate, the default) learn the squares.
    assert result.mean_after > result.mean_before + 0.1, (result.dice_before, result.dice_after)
    assert result.mean_after > 0.75
    assert result.checkpoint.record["state"] == "done"
    assert result.seconds > 0
    assert len(result.checkpoint.record["epochs"]) > len(checkpoint.record["epochs"])
    changed = any(
        not torch.equal(checkpoint.state_dict[k], v)
        for k, v in result.checkpoint.state_dict.items()
    )
    assert changed
    # The accepted slices are trained on, the held-out ones are not.
    assert result.checkpoint.record["annotated"]["sq"] == [2, 5]


def test_retrain_without_validation_slices_reports_no_dice(first_model) -> None:
    checkpoint, stack = first_model
    plain = pipeline.AnnotatedStack(stack.image, stack.labels, [2, 5, 8], name="sq")
    result = retrain(checkpoint, plain, budget_steps=3)
    assert result.steps == 3
    assert result.dice_before == {} and result.dice_after == {}
    assert np.isnan(result.mean_before) and np.isnan(result.mean_after)


def test_a_stopped_retrain_says_so(first_model) -> None:
    checkpoint, stack = first_model
    stop = threading.Event()
    stop.set()
    result = retrain(checkpoint, stack, budget_steps=5, stop_event=stop)
    assert result.steps == 0
    assert result.checkpoint.record["state"] == "stopped"


def test_bad_budgets_and_cascades_are_refused(first_model) -> None:
    checkpoint, stack = first_model
    with pytest.raises(NumsnetError, match="at least 1 step"):
        retrain(checkpoint, stack, budget_steps=0)
    with pytest.raises(NumsnetError, match="cascade"):
        retrain(object(), stack)  # type: ignore[arg-type]


def test_loop_benchmark_runs_end_to_end(tmp_path) -> None:
    """``benchmarks/loop.py`` on the CT sample, one round, three strategies, tiny budget."""
    import json
    import sys
    from pathlib import Path

    bench = Path(__file__).parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    import loop
    import loop_report

    args = ["--dataset", "sample", "--rounds", "1", "--seeds", "0", "--initial-epochs", "1"]
    args += [
        "--budget-steps",
        "2",
        "--strategies",
        "entropy,random,oracle",
        "--out",
        str(tmp_path),
    ]
    assert loop.main(args) == 0
    records = [
        json.loads(line) for line in (tmp_path / "loop_sample.jsonl").read_text().splitlines()
    ]
    assert [r["strategy"] for r in records] == ["entropy", "random", "oracle"]
    for record in records:
        first, last = record["rounds"]
        assert last["annotated_slices"] == first["annotated_slices"] + 1 == 4  # 10% of 30, +1
        assert first["retrain_steps"] == 2
        assert len(first["chosen"]) == 1  # one slice chosen for the one stack
        assert 0.0 <= last["dice"] <= 1.0 and last["cpu_minutes"] > first["cpu_minutes"]
    assert loop.main([*args, "--summary"]) == 0
    assert (tmp_path / "loop_sample.png").stat().st_size > 0
    assert "gap between random and the oracle" in (tmp_path / "loop_sample.md").read_text()
    # The pieces: evenly spaced, per-slice Dice, the interpolated crossing.
    assert loop.farthest_slice(10, np.array([2, 3])) == 9
    ref = np.zeros((2, 4, 4), dtype=np.uint8)
    ref[0, :2] = 1
    pred = ref.copy()
    pred[0, 2] = 1
    assert np.allclose(loop.slice_dice(pred, ref, 2), [2 * 8 / (12 + 8), 1.0])
    assert loop_report.slices_to_reach(np.array([0.5, 0.6, 0.8]), 0.7) == pytest.approx(1.5)
    assert np.isnan(loop_report.slices_to_reach(np.array([0.5, 0.6]), 0.7))


def test_the_budget_is_exact_whatever_the_preset_says(first_model) -> None:
    checkpoint, stack = first_model
    growing = TRAINING.replace(
        steps=4000,
        steps_per_slice=150,
        min_steps=400,
        schedule="cosine",
        warmup_steps=20,
        semi_supervised=1.0,
    )
    result = retrain(checkpoint, stack, budget_steps=3, training=growing)
    assert result.steps == 3
    assert result.checkpoint.train_config.schedule == "constant"
    assert result.checkpoint.train_config.semi_supervised == 0.0  # a supervised fine-tune


def test_a_retrain_fine_tunes_at_a_tenth_of_the_run_s_peak_and_does_not_compound(
    first_model,
) -> None:
    checkpoint, stack = first_model
    first = retrain(checkpoint, stack, budget_steps=2)
    assert first.checkpoint.train_config.learning_rate == pytest.approx(1e-3)  # 1e-2 / 10
    second = retrain(first.checkpoint, stack, budget_steps=2)
    assert second.checkpoint.train_config.learning_rate == pytest.approx(1e-3)
    assert second.checkpoint.record["peak_learning_rate"] == pytest.approx(1e-2)
    full = retrain(checkpoint, stack, budget_steps=2, learning_rate_factor=1.0)
    assert full.checkpoint.train_config.learning_rate == pytest.approx(1e-2)
    with pytest.raises(NumsnetError, match="learning-rate factor"):
        retrain(checkpoint, stack, budget_steps=2, learning_rate_factor=0.0)
