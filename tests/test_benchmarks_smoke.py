"""Smoke test of the benchmark scripts: each runs end to end on a tiny setting.

The benchmarks are run by hand (see benchmarks/README.md); here every script runs on one
or two slices at 32 px for one epoch, and what it writes is checked against what the
setting implies (number of runs, slices trained on, metric ranges, FLOPs of a known
layer). Only the MONAI comparison is skipped when MONAI is not installed.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

BENCH = Path(__file__).parents[1] / "benchmarks"
DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
sys.path.insert(0, str(BENCH))

needs_data = pytest.mark.skipif(
    not (DATA / "acdc").is_dir() or not (DATA / "covid_medseg100").is_dir(),
    reason="the real data (../shared/data/acdc, covid_medseg100) is not next to the repository",
)


def _module(name: str):
    return importlib.import_module(name)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _registry_as_shipped(monkeypatch):
    """accuracy_stacks.py adds the peers to the registry; keep them out of later tests."""
    from napari_numsnet.models import registry

    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))


def test_flop_count_of_a_single_convolution_matches_the_hand_count():
    speed = _module("speed")
    # Conv 3x3, 1 -> 2 channels, 8 x 8 output: 2 FLOPs per multiply-add,
    # 9 taps x 1 input channel x 2 output channels x 64 pixels = 1152 MACs = 2304 FLOPs.
    forward, train = speed.count_flops(lambda: nn.Conv2d(1, 2, 3, padding=1, bias=False), 8)
    assert forward == 2304
    # Backward of a conv on a leaf input: the weight gradient only (same MACs) -> 2x.
    assert train == 2 * 2304


def test_mean_std_and_table_helpers():
    common = _module("common")
    mean, std, n = common.mean_std([0.5, 0.7, float("nan")])
    assert (round(mean, 6), round(std, 6), n) == (0.6, round(np.std([0.5, 0.7], ddof=1), 6), 2)
    assert common.fmt(*common.mean_std([])) == "n/a"
    table = common.markdown_table(["a", "b"], [[1, 2]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]


@needs_data
def test_accuracy_stacks_trains_on_the_planned_slices(tmp_path):
    acc = _module("accuracy_stacks")
    data, tables = _module("stacks_data"), _module("stacks_tables")
    args = ["--data-root", str(DATA), "--out", str(tmp_path), "--models", "unet",
            "--seeds", "0", "--regimes", "few,all", "--patients", "1", "--eval-stacks", "1",
            "--epochs", "1", "--size", "32", "--largest-component",
            "--curve-steps", "1"]  # fmt: skip
    assert acc.main(args) == 0
    records = _lines(tmp_path / "accuracy_acdc.jsonl")
    for r in records:  # the curve ends with the last weights, after the last step
        assert r["curve"] and r["curve"][-1]["step"] == r["steps"]
    assert [r["regime"] for r in records] == ["few", "all"]
    pool = data.load_pool(data.stack_pairs(DATA / "acdc", "Tr"), 1)
    depths = [len(s.image) for s in pool]
    # 10% of each stack, rounded half up, at least one slice; all slices for the bound.
    assert records[0]["train_slices"] == sum(max(1, int(z * 0.1 + 0.5)) for z in depths)
    assert records[1]["train_slices"] == sum(depths)
    evaluated = data.load_pool(data.stack_pairs(DATA / "acdc", "Val"), None)[:1]
    assert records[0]["eval_slices"] == len(evaluated[0].image)
    for r in records:
        for name in data.ACDC_CLASSES[1:]:
            assert 0.0 <= r["scores"][name]["dice"] <= 1.0
            for key in ("largest_component", "chosen_component"):  # the same predictions
                assert 0.0 <= r["scores"][name][f"dice_per_volume_{key}"] <= 1.0
    assert set(records[0]["chosen_component"]) == {"classes", "dice_without", "dice_with"}
    summary = tables.summarize(records, list(data.ACDC_CLASSES))
    assert "| UNet | 10% slices |" in summary and "| UNet | all slices |" in summary
    printed = tables.run_summary(records[0])  # what the script prints after each run
    assert f"{records[0]['steps']} steps" in printed and "the validated choice" in printed
    curves = _module("curves")  # the recipes-side-by-side table and plot read these records
    plot = tmp_path / "curves.png"
    assert curves.main(["--out", str(tmp_path), "--runs", "acdc=smoke", "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 0


@needs_data
def test_accuracy_stacks_trains_a_3d_model_through_the_pipeline(tmp_path):
    acc = _module("accuracy_stacks")
    data, tables = _module("stacks_data"), _module("stacks_tables")
    args = ["--data-root", str(DATA), "--out", str(tmp_path), "--models", "msdsunet",
            "--seeds", "0", "--patients", "1", "--eval-stacks", "1", "--epochs", "1",
            "--size", "32"]  # fmt: skip
    assert acc.main(args) == 0
    (record,) = _lines(tmp_path / "accuracy_acdc.jsonl")
    assert record["model"] == "msdsunet" and record["eval_slices"] > 0
    assert all(0.0 <= record["scores"][n]["dice"] <= 1.0 for n in data.ACDC_CLASSES[1:])
    assert "| MSDS-UNet | 10% slices |" in tables.summarize([record], list(data.ACDC_CLASSES))


@needs_data
def test_accuracy_stacks_scores_the_pruned_unetsharp_heads(tmp_path):
    acc = _module("accuracy_stacks")
    data, tables = _module("stacks_data"), _module("stacks_tables")
    args = ["--data-root", str(DATA), "--out", str(tmp_path), "--models", "unetsharp",
            "--seeds", "0", "--patients", "1", "--eval-stacks", "1", "--epochs", "1",
            "--size", "32", "--unetsharp-pruned", "--name", "pruned"]  # fmt: skip
    assert acc.main(args) == 0
    (record,) = _lines(tmp_path / "pruned.jsonl")
    assert sorted(record["pruned"]) == ["1", "2", "3", "4"]
    for part in record["pruned"].values():
        assert all(0.0 <= part["scores"][n]["dice"] <= 1.0 for n in data.ACDC_CLASSES[1:])
    table = tables.summarize_pruned([record], list(data.ACDC_CLASSES))
    assert "| fast, head X(0,1) |" in table and "| accurate (mean of 4 heads) |" in table


@needs_data
def test_accuracy_covid_trains_the_cascade(tmp_path):
    covid = _module("accuracy_covid")
    assert covid.cascade_models("cascade:raiunet+unet") == ("raiunet", "unet")
    assert covid.cascade_models("raiunet") is None
    args = ["--data-root", str(DATA), "--out", str(tmp_path), "--models",
            "cascade:raiunet+raiunet", "--seeds", "0", "--epochs", "1", "--size", "32",
            "--limit", "2"]  # fmt: skip
    assert covid.main(args) == 0
    (record,) = _lines(tmp_path / "accuracy_covid.jsonl")
    assert record["model"] == "cascade:raiunet+raiunet" and record["region_values"] == [1, 2]
    for name in ("ground-glass", "consolidation", "infection"):
        assert 0.0 <= record["scores"][name]["dice"] <= 1.0
    report = _module("report")
    assert "| CHS-Net cascade (RAIU-Net + RAIU-Net) |" in report.covid_section([record])


@needs_data
def test_accuracy_covid_reads_the_colour_labels(tmp_path):
    covid = _module("accuracy_covid")
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (128, 0, 0)
    rgb[1, 2] = (0, 128, 0)
    assert covid.rgb_to_labels(rgb).tolist() == [[1, 0, 0], [0, 0, 2]]
    args = ["--data-root", str(DATA), "--out", str(tmp_path), "--models", "unet",
            "--seeds", "0", "--epochs", "1", "--size", "32", "--limit", "2",
            "--class-weights", "frequency"]  # fmt: skip
    assert covid.main(args) == 0
    (record,) = _lines(tmp_path / "accuracy_covid.jsonl")
    assert (record["train_slices"], record["test_slices"]) == (2, 2)
    assert record["class_weights"] == "frequency"  # the preset's is "none"
    assert 0.0 <= record["scores"]["ground-glass"]["dice"] <= 1.0


def test_self_learning_scores_every_level(tmp_path):
    sl = _module("self_learning")
    args = ["--out", str(tmp_path), "--stacks", "ct", "--seeds", "0", "--epochs", "1",
            "--levels", "1", "--size", "32", "--model", "unet"]  # fmt: skip
    assert sl.main(args) == 0
    records = _lines(tmp_path / "self_learning.jsonl")
    assert [r["level"] for r in records] == [0, 1]
    assert all(0.0 <= r["scores"]["lung"]["dice"] <= 1.0 for r in records)
    # --epochs takes effect (the preset's budget, at least 400 steps, does not override
    # it): one epoch of at most the sample's 30 slices in batches of 2.
    assert 0 < records[1]["train_steps"] <= 15
    # Hand-checked overlap: 2 of 3 predicted voxels right, 1 reference voxel missed.
    pred = np.array([1, 1, 1, 0, 0], dtype=bool)
    ref = np.array([1, 1, 0, 1, 0], dtype=bool)
    scores = sl.overlap(pred, ref)
    assert scores == {"dice": 4 / 6, "precision": 2 / 3, "recall": 2 / 3}


def test_self_learning_fine_tune_steps_take_effect(tmp_path):
    sl = _module("self_learning")
    args = ["--out", str(tmp_path), "--stacks", "ct", "--seeds", "0", "--steps", "40",
            "--fine-tune-steps", "2", "--levels", "2", "--size", "32", "--model", "unet",
            "--no-guard", "--learning-rate", "1e-2"]  # fmt: skip
    assert sl.main(args) == 0
    records = _lines(tmp_path / "self_learning.jsonl")
    assert [(r["level"], r["train_steps"]) for r in records] == [(0, 0), (1, 40), (2, 2)]


def test_speed_measures_throughput_and_memory(tmp_path):
    speed = _module("speed")
    args = ["--out", str(tmp_path), "--models", "unet,drsegunet", "--sizes", "32",
            "--widths", "fast", "--iters", "1", "--train-iters", "1"]  # fmt: skip
    assert speed.main(args) == 0
    records = _lines(tmp_path / "speed.jsonl")
    assert [r["model"] for r in records] == ["unet", "drsegunet"]
    for r in records:
        assert r["infer_slices_per_s"] > 0 and r["train_slices_per_s"] > 0
        assert r["infer_peak_bytes"] > 0
        # Training = forward + backward, so it costs more than the forward alone.
        assert r["flops_train"] > r["flops_forward"] > 0


@needs_data
def test_cohort_scaling_predicts_every_stack_per_worker_count(tmp_path):
    scaling = _module("cohort_scaling")
    args = ["--out", str(tmp_path), "--workers", "1,2", "--limit", "2", "--size", "32",
            "--width-scale", "0.125", "--reps", "2"]  # fmt: skip
    assert scaling.main(args) == 0  # a restart that does not find both stacks done fails
    records = _lines(tmp_path / "cohort_scaling.jsonl")
    assert [r["workers"] for r in records] == [1, 2]
    for r in records:
        assert r["stacks"] == 2 and r["slices"] > 2 and r["rounds"] == 2
        assert r["seconds"]["n"] == 2 and r["seconds"]["min"] > 0
        assert r["restart_seconds"]["n"] == 2
    assert records[0]["speedup"]["median"] == 1.0


def test_speed_times_pruned_unetsharp_and_3d_subvolumes(tmp_path):
    speed = _module("speed")
    args = ["--out", str(tmp_path), "--models", "unetsharp,unetsharp_fast1,msdsunet",
            "--sizes", "32", "--widths", "fast", "--iters", "1", "--train-iters", "1",
            "--depth", "4"]  # fmt: skip
    assert speed.main(args) == 0
    full, pruned, volume = _lines(tmp_path / "speed.jsonl")
    # Pruned to head X(0,1): fewer nodes computed, the same weights; inference only.
    assert pruned["prune_level"] == 1 and pruned["params"] == full["params"]
    assert 0 < pruned["flops_forward"] < full["flops_forward"]
    assert "train_slices_per_s" not in pruned and full["train_slices_per_s"] > 0
    # The 3D model runs on a 4-slice sub-volume; its FLOPs are per slice.
    assert volume["depth"] == 4 and volume["train_slices_per_s"] > 0

    class Conv3d(nn.Conv3d):
        volumetric = True

    # Conv 3x3x3, 1 -> 2 channels on a 4 x 8 x 8 sub-volume: 27 taps x 2 outputs x 64
    # pixels MACs per slice, 2 FLOPs each.
    forward, _ = speed.count_flops(lambda: Conv3d(1, 2, 3, padding=1, bias=False), 8, 4)
    assert forward == 2 * 27 * 2 * 64
    report = _module("report")
    table = report.speed_section([full, pruned, volume], tmp_path, "speed")
    assert "| UNet# fast, head X(0,1) |" in table and "MSDS-UNet (3D, 4-slice" in table


def test_monai_comparison(tmp_path):
    mc = _module("monai_compare")
    if not mc.monai_available():
        pytest.skip("MONAI is not installed: only the MONAI comparison is skipped")
    assert mc.main(["--out", str(tmp_path), "--sizes", "32", "--iters", "1",
                    "--train-iters", "1"]) == 0  # fmt: skip
    records = _lines(tmp_path / "monai_compare.jsonl")
    assert [r["model"] for r in records] == ["ours_unetpp", "monai_matched", "monai_default"]
    assert records[0]["infer_ratio_to_ours"] == 1.0
    # The matched MONAI network has our encoder widths, so about our parameter count;
    # MONAI's default (second level 32 wide) is much smaller.
    assert 0.8 < records[1]["params"] / records[0]["params"] < 1.2
    assert records[2]["params"] < 0.5 * records[0]["params"]


def test_first_prediction_and_report(tmp_path):
    fp = _module("first_prediction")
    args = ["--out", str(tmp_path), "--models", "unet", "--epochs", "1", "--size", "32",
            "--class-weights", "frequency"]  # fmt: skip
    assert fp.main(args) == 0
    (record,) = _lines(tmp_path / "first_prediction.jsonl")
    # 10% of the 30-slice sample: 3 annotated slices.
    assert len(record["annotated"]) == 3
    assert record["recipe"]["class_weights"] == "frequency"  # the preset's is "none"
    assert record["seconds_total"] >= record["seconds_training"] > 0
    report = _module("report")
    speed = _module("speed")
    speed.main(["--out", str(tmp_path), "--models", "unet", "--sizes", "32", "--widths",
                "fast", "--iters", "1", "--train-iters", "1"])  # fmt: skip
    assert report.main(["--out", str(tmp_path)]) == 0
    tables = (tmp_path / "tables.md").read_text()
    assert "### Time to first prediction" in tables and "### Speed (speed)" in tables
    assert (tmp_path / "speed_throughput.png").stat().st_size > 0


def test_heads_scores_every_unetsharp_head_and_the_unguided_model(tmp_path):
    heads = _module("heads")
    argv = ["--model", "unetsharp", "--steps", "2", "--size", "32", "--out", str(tmp_path)]
    assert heads.main(argv) == 0
    (record,) = _lines(tmp_path / "heads.jsonl")
    rows = record["rows"]
    # The default (four heads averaged, guided), each of the four heads, then no guide.
    assert [(r["head"], r["guided"]) for r in rows] == [
        (None, True),
        (1, True),
        (2, True),
        (3, True),
        (4, True),
        (None, False),
    ]
    assert record["steps"] == 2 and record["size"] == 32 and len(record["annotated"]) == 3
    for row in rows:
        for part in ("unseen", "trained"):
            assert set(row[part]) == {"liver", "spleen", "kidneys", "lungs", "vertebrae"}
            assert all(0.0 <= v <= 1.0 for v in row[part].values())


def test_first_prediction_scores_numsnet_in_the_directions_asked(tmp_path):
    """``--reverse-runs`` trains on runs in both orders; ``--directions`` scores the same
    checkpoint in each direction besides its own (``both`` after reversed runs)."""
    fp = _module("first_prediction")
    args = ["--out", str(tmp_path), "--models", "numsnet", "--epochs", "1", "--size", "32"]
    assert fp.main([*args, "--reverse-runs", "--directions", "forward,both"]) == 0
    (record,) = _lines(tmp_path / "first_prediction.jsonl")
    assert record["recipe"]["reverse_runs"] and record["direction"] == "both"
    assert set(record["by_direction"]) == {"forward", "both"}
    assert record["by_direction"]["both"]["mean_dice"] == pytest.approx(record["mean_dice"])


def test_default_layout_puts_training_and_prediction_back_on_a_plain_to(tmp_path, monkeypatch):
    """``--default-layout`` (to measure channels-last): models stay in the default layout."""
    from napari_numsnet.config import ModelConfig
    from napari_numsnet.engine import predict, trainer
    from napari_numsnet.models import create_model

    monkeypatch.setattr(trainer, "place_model", trainer.place_model)  # restored afterwards
    monkeypatch.setattr(predict, "place_model", predict.place_model)
    model = create_model(ModelConfig("unet", num_classes=2, widths=(4, 4, 8, 8, 8)))
    placed = trainer.place_model(model, torch.device("cpu"))
    assert not all(p.is_contiguous() for p in placed.parameters())  # channels-last
    fp = _module("first_prediction")
    args = ["--out", str(tmp_path), "--models", "unet", "--epochs", "1", "--size", "32"]
    assert fp.main([*args, "--default-layout"]) == 0
    for place in (trainer.place_model, predict.place_model):
        fresh = create_model(ModelConfig("unet", num_classes=2, widths=(4, 4, 8, 8, 8)))
        assert all(p.is_contiguous() for p in place(fresh, torch.device("cpu")).parameters())


@needs_data
def test_accuracy_stacks_trains_the_monai_unet_peer_with_our_recipe(tmp_path):
    if importlib.util.find_spec("monai") is None:
        pytest.skip("MONAI is not installed: only the MONAI peer is skipped")
    acc, peers, data = _module("accuracy_stacks"), _module("peers"), _module("stacks_data")
    args = ["--data-root", str(DATA), "--out", str(tmp_path), "--models", "monai_unet",
            "--seeds", "0", "--patients", "1", "--eval-stacks", "1", "--steps", "2",
            "--size", "32"]  # fmt: skip
    assert acc.main(args) == 0
    (record,) = _lines(tmp_path / "accuracy_acdc.jsonl")
    assert record["model"] == "monai_unet" and record["steps"] == 2
    assert all(0.0 <= record["scores"][n]["dice"] <= 1.0 for n in data.ACDC_CLASSES[1:])
    # The fast preset's half widths are MONAI's usual channels, about DRSegUNet's size.
    from napari_numsnet.config import ModelConfig
    from napari_numsnet.models.registry import create_model, scaled_widths

    model = create_model(ModelConfig("monai_unet", num_classes=4,
                                     widths=scaled_widths("monai_unet", 0.5)))  # fmt: skip
    assert model.config.widths == (16, 32, 64, 128, 256)
    assert model.kind is peers.ModelKind.SLICE
    assert sum(p.numel() for p in model.parameters()) == 1_625_849


def _strided(num_classes: int = 3, widths=None) -> nn.Module:
    peers = _module("peers")
    peers.register(["drsegunet_strided"])
    from napari_numsnet.config import ModelConfig
    from napari_numsnet.models.registry import create_model

    torch.manual_seed(0)
    return create_model(ModelConfig("drsegunet_strided", num_classes=num_classes, widths=widths))


def test_the_strided_drsegunet_peer_keeps_the_thesis_blocks_and_declares_its_count():
    from napari_numsnet.config import ModelConfig
    from napari_numsnet.models import create_model, keras_parameter_count

    strided = _strided()
    thesis = create_model(ModelConfig("drsegunet", in_channels=1, num_classes=3))
    assert keras_parameter_count(strided) == 6_881_651
    assert [type(m) for m in strided.encoders] == [type(m) for m in thesis.encoders]
    assert strided.widths == thesis.widths
    tiny = _strided(widths=(4, 8, 8, 8, 8)).train()
    out = tiny(torch.randn(2, 1, 48, 16)).logits
    assert out.shape == (2, 3, 48, 16)
    out.square().mean().backward()
    assert all(p.grad is not None for p in tiny.parameters())


def test_the_strided_drsegunet_peer_runs_no_3x3_convolution_at_full_resolution():
    """The point of the variant: every 3x3 convolution computes at most half the input's
    side, where the thesis' network runs its stem and last decoder block at full
    resolution (the one full-resolution layer left is the head's transposed convolution)."""
    from napari_numsnet.config import ModelConfig
    from napari_numsnet.models import create_model

    def full_resolution_3x3_outputs(model: nn.Module) -> list[str]:
        seen: list[str] = []
        hooks = [
            module.register_forward_hook(
                lambda m, args, out, key=key: seen.append(key) if out.shape[-1] == 64 else None
            )
            for key, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3)
        ]
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 1, 64, 64)).logits.shape == (1, 3, 64, 64)
        for hook in hooks:
            hook.remove()
        return seen

    widths = (4, 8, 8, 8, 8)
    assert full_resolution_3x3_outputs(_strided(widths=widths)) == []
    thesis = create_model(ModelConfig("drsegunet", num_classes=3, widths=widths))
    assert "stem.body.0" in full_resolution_3x3_outputs(thesis)
