"""The ``numsnet`` command line, called in-process."""

from __future__ import annotations

import argparse
import re

import nibabel as nib
import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet.cli import main
from napari_numsnet.engine.checkpoint import load_checkpoint
from napari_numsnet.engine.postprocess import keep_largest_component
from napari_numsnet.io.classes import ClassTable, load_class_table
from napari_numsnet.io.labels import read_labels
from napari_numsnet.io.volume import read_volume
from napari_numsnet.models import MODELS

# Parameters of the paper's networks for 3 classes (NUMSnet paper, Table I; DRSegUNet
# thesis tables), as Keras counts them.
PAPER_COUNTS = {
    "unet": 7_767_523,
    "wunet": 9_290_998,
    "unetpp": 9_045_507,
    "numsnet": 11_713_943,
    "nums_all": 14_526_368,
    "drsegunet": 6_877_011,
}
TINY = ["--widths", "4,8,8,8,8", "--device", "cpu"]
# An oblique-free but non-trivial geometry: flipped first axis, 2.5 mm slices, an origin.
AFFINE = np.array(
    [
        [-0.8, 0.0, 0.0, 120.0],
        [0.0, 0.8, 0.0, -40.0],
        [0.0, 0.0, 2.5, 300.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


@pytest.fixture
def nifti_pair(sample, tmp_path):
    """The sample cropped to 48 x 48 x 12 (file order, slices last), written as NIfTI."""
    image = np.moveaxis(sample.volume.data, 0, 2)[30:78, 20:68, 9:21]
    labels = np.moveaxis(sample.labels, 0, 2)[30:78, 20:68, 9:21]
    image_path, labels_path = tmp_path / "ct.nii.gz", tmp_path / "ct_labels.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(image), AFFINE), image_path)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(labels), AFFINE), labels_path)
    return image_path, labels_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_models_lists_every_model_with_the_paper_counts(capsys):
    status, out, _ = run(capsys, "models")
    assert status == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert set(rows) == set(MODELS)
    for name, count in PAPER_COUNTS.items():
        assert f"{count:,}" in rows[name], rows[name]
    assert "for 3 classes" in out


def test_models_for_another_number_of_classes(capsys):
    # One more class adds one 1x1 filter to the head: in_features + 1 bias.
    _, out, _ = run(capsys, "models", "--num-classes", "4")
    unet = next(line for line in out.splitlines() if line.startswith("unet "))
    assert f"{PAPER_COUNTS['unet'] + 32 + 1:,}" in unet


def test_train_predict_evaluate_round_trip(nifti_pair, tmp_path, capsys):
    image_path, labels_path = nifti_pair
    ckpt = tmp_path / "model.numsnet.pt"
    status, out, err = run(
        capsys,
        "train",
        "--image", image_path,
        "--labels", labels_path,
        "--annotated", "3,5,7",
        "--val", "7",
        "--num-classes", "6",
        "--epochs", "1",
        "--batch-size", "2",
        "--size", "32",
        "--output", ckpt,
        *TINY,
    )  # fmt: skip
    assert status == 0, err
    assert "preset fast: 1 epochs, batch 2" in out  # one rule: fast on a CPU, as the demo
    assert f"checkpoint: {ckpt} (1 epochs" in out
    assert "validation Dice:" in out
    assert "largest component only, by default when predicting: " in out
    checkpoint = load_checkpoint(ckpt)
    assert checkpoint.model_config.widths == (4, 8, 8, 8, 8)
    assert checkpoint.model_config.num_classes == 6
    assert checkpoint.preprocess.size == 32
    assert checkpoint.preprocess.window == pipeline.CT_WINDOW
    assert checkpoint.record["annotated"] == {"ct.nii.gz": [3, 5]}

    prediction = tmp_path / "ct_pred.nii.gz"
    status, out, err = run(
        capsys, "predict", "--checkpoint", ckpt, "--input", image_path, "--output", prediction,
        "--device", "cpu", "--batch-size", "3", "--largest-component", "none",
    )  # fmt: skip
    assert status == 0, err
    assert f"{image_path} -> {prediction}" in out
    table = tmp_path / "ct_pred.classes.json"  # the class table travels with the labels
    assert f"classes: {table}" in out
    assert list(load_class_table(table).names) == list(load_checkpoint(ckpt).class_names)
    written, source = nib.load(prediction), nib.load(image_path)
    np.testing.assert_allclose(written.affine, source.affine)
    assert written.shape == source.shape == (48, 48, 12)
    assert np.issubdtype(written.get_data_dtype(), np.integer)
    labels = np.asarray(written.dataobj)
    assert labels.min() >= 0 and labels.max() <= 5

    cleaned = tmp_path / "ct_pred_lcc.nii.gz"
    status, out, err = run(
        capsys, "predict", "--checkpoint", ckpt, "--input", image_path, "--output", cleaned,
        "--device", "cpu", "--largest-component", "1,2,3,4,5",
    )  # fmt: skip
    assert status == 0, err
    kept = np.asarray(nib.load(cleaned).dataobj)
    assert np.array_equal(kept, keep_largest_component(labels, range(1, 6)))
    assert not np.array_equal(kept, labels)  # the short run's islands are gone
    status, _, err = run(
        capsys, "predict", "--checkpoint", ckpt, "--input", image_path, "--output",
        tmp_path / "never.nii.gz", "--largest-component", "9",
    )  # fmt: skip
    assert status == 2 and "--largest-component 9: not a class of this model" in err

    # without the option: the classes the validation slice chose in training
    chosen = checkpoint.record["largest_component"]["classes"]
    default = tmp_path / "ct_pred_default.nii.gz"
    status, out, err = run(
        capsys, "predict", "--checkpoint", ckpt, "--input", image_path, "--output", default,
        "--device", "cpu",
    )  # fmt: skip
    assert status == 0, err
    by_default = np.asarray(nib.load(default).dataobj)
    assert np.array_equal(by_default, keep_largest_component(labels, chosen))
    assert not (tmp_path / "never.nii.gz").exists()

    status, out, err = run(
        capsys, "evaluate", "--prediction", prediction, "--reference", labels_path,
        "--slices", "0-2,8", "--classes", tmp_path / "missing.json",
    )  # fmt: skip
    assert status == 2 and "No class table" in err
    status, out, err = run(
        capsys, "evaluate", "--prediction", prediction, "--reference", labels_path,
        "--slices", "0-2,8",
    )  # fmt: skip
    assert status == 0, err
    assert f"classes: {table}" in out  # read from beside the prediction
    table.unlink()  # without a table: class 1, class 2, ... up to the largest value
    status, out, err = run(
        capsys, "evaluate", "--prediction", prediction, "--reference", labels_path,
        "--slices", "0-2,8",
    )  # fmt: skip
    assert status == 0, err
    meta = read_volume(labels_path).meta
    reference = read_labels(labels_path, like=meta)
    predicted = read_labels(prediction, like=meta)
    values = int(max(reference.max(), predicted.max())) + 1
    expected = pipeline.evaluate(predicted, reference, ClassTable.default(values), [0, 1, 2, 8])
    printed = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^  (class \d)\s+(-?[\d.]+|nan)", out, flags=re.M)
    }
    assert printed.keys() == expected.keys()
    for name, scores in expected.items():
        if np.isnan(scores["dice"]):
            assert np.isnan(printed[name])
        else:
            assert printed[name] == pytest.approx(scores["dice"], abs=5e-4)


def test_pseudolabel_writes_a_label_file(sample, tmp_path, capsys):
    target = tmp_path / "pseudo.nii.gz"
    status, out, err = run(capsys, "pseudolabel", "--image", sample.path, "--output", target)
    assert status == 0, err
    assert f"pseudo-labels: {target}" in out
    labels = read_labels(target, like=sample.volume.meta)
    assert labels.shape == sample.volume.data.shape
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert labels.any()
    np.testing.assert_allclose(nib.load(target).affine, nib.load(sample.path).affine)


def test_demo_prints_dice_per_class_and_writes_the_prediction(sample, tmp_path, capsys):
    status, out, err = run(
        capsys, "demo", "--epochs", "1", "--size", "32", "--output", tmp_path, "--quiet", *TINY
    )
    assert status == 0, err
    assert "Dice on the 26 slices it never saw (neither trained nor validated on)" in out
    for name in sample.classes.names[1:]:
        line = re.search(rf"^  {name}\s+(.*)$", out, flags=re.M)
        assert line, name
        cells = line.group(1).split()
        assert len(cells) == 4  # Dice, IoU, precision, recall
        assert all(c == "nan" or 0.0 <= float(c) <= 1.0 for c in cells)
    assert "widths (4, 8, 8, 8, 8)" in out and "32 px" in out
    written = tmp_path / "ct_sample_prediction.nii.gz"
    labels = read_labels(written, like=sample.volume.meta)
    assert labels.shape == sample.volume.data.shape
    np.testing.assert_allclose(nib.load(written).affine, nib.load(sample.path).affine)
    checkpoint = load_checkpoint(tmp_path / "ct_sample.numsnet.pt")
    assert checkpoint.epochs_done == 1
    assert "annotated (spread, 10%): slices 5, 15, 25" in out


def test_missing_checkpoint_exits_2(nifti_pair, tmp_path, capsys):
    image_path, _ = nifti_pair
    status, _, err = run(
        capsys, "predict", "--checkpoint", tmp_path / "none.numsnet.pt",
        "--input", image_path, "--output", tmp_path / "out.nii.gz",
    )  # fmt: skip
    assert status == 2
    assert err.startswith("numsnet predict: error: No checkpoint")
    assert not (tmp_path / "out.nii.gz").exists()


def test_damaged_checkpoint_exits_2(nifti_pair, tmp_path, capsys):
    image_path, _ = nifti_pair
    bad = tmp_path / "bad.numsnet.pt"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    status, _, err = run(
        capsys, "predict", "--checkpoint", bad, "--input", image_path,
        "--output", tmp_path / "out.nii.gz",
    )  # fmt: skip
    assert status == 2
    assert "damaged" in err


def test_missing_image_exits_2(tmp_path, capsys):
    status, _, err = run(
        capsys, "train", "--image", tmp_path / "nope.nii.gz", "--labels", tmp_path / "l.nii.gz",
        "--output", tmp_path / "m.numsnet.pt",
    )  # fmt: skip
    assert status == 2
    assert "numsnet train: error: No file at" in err and "nope.nii.gz" in err


def test_unreadable_slice_list_exits_2(nifti_pair, tmp_path, capsys):
    image_path, labels_path = nifti_pair
    status, _, err = run(
        capsys, "train", "--image", image_path, "--labels", labels_path,
        "--annotated", "three", "--output", tmp_path / "m.numsnet.pt", *TINY,
    )  # fmt: skip
    assert status == 2
    assert "slice list" in err and "3,7,10-12" in err


def test_bad_widths_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--widths", "4,x"])
    assert info.value.code == 2
    assert "comma-separated" in capsys.readouterr().err


def test_train_resume_keeps_the_checkpoint_classes(nifti_pair, tmp_path, capsys):
    image_path, labels_path = nifti_pair
    first, second = tmp_path / "first.numsnet.pt", tmp_path / "second.numsnet.pt"
    common = ["--image", image_path, "--labels", labels_path, "--epochs", "1", "--size", "32"]
    common += ["--batch-size", "2"]
    status, _, err = run(
        capsys, "train", *common, "--annotated", "8,9", "--num-classes", "6",
        "--preset", "paper", "--output", first, *TINY,
    )  # fmt: skip
    assert status == 0, err
    # A new annotation without lungs and vertebrae (4, 5): the checkpoint's six classes stay.
    partial = np.asarray(nib.load(labels_path).dataobj).copy()
    partial[partial > 3] = 0
    partial_path = tmp_path / "partial_labels.nii.gz"
    nib.save(nib.Nifti1Image(partial, AFFINE), partial_path)
    common[3] = str(partial_path)
    status, out, err = run(
        capsys, "train", *common, "--annotated", "0,1", "--resume", first, "--output", second,
        "--device", "cpu",
    )  # fmt: skip
    assert status == 0, err
    assert "preset paper:" in out  # the resumed run keeps its preset, not the CPU default
    resumed = load_checkpoint(second)
    assert resumed.epochs_done == 2
    assert resumed.class_names == load_checkpoint(first).class_names
    assert len(resumed.class_names) == 6


def test_demo_budget_options_take_effect_or_are_refused(tmp_path, capsys):
    status, out, err = run(
        capsys, "demo", "--steps", "3", "--size", "32", "--output", tmp_path, "--quiet", *TINY
    )
    assert status == 0, err
    assert "preset fast: 3 steps" in out
    assert load_checkpoint(tmp_path / "ct_sample.numsnet.pt").record["steps_done"] == 3
    status, _, err = run(
        capsys, "demo", "--steps", "3", "--epochs", "1", "--output", tmp_path, "--quiet", *TINY
    )
    assert status == 2 and "--steps or --epochs" in err


def test_train_patch_size_takes_effect_or_is_refused(nifti_pair, tmp_path, capsys):
    image_path, labels_path = nifti_pair
    ckpt = tmp_path / "patches.numsnet.pt"
    common = ["train", "--image", image_path, "--labels", labels_path, "--annotated", "3,5",
              "--num-classes", "6", "--steps", "2", "--size", "32", *TINY]  # fmt: skip
    status, _, err = run(capsys, *common, "--patch-size", "16", "--output", ckpt)
    assert status == 0, err
    assert load_checkpoint(ckpt).train_config.patch_size == 16
    for bad, message in (("20", "multiple of 16"), ("-1", "--patch-size -1")):
        status, _, err = run(
            capsys, *common, "--patch-size", bad, "--output", tmp_path / "bad.numsnet.pt"
        )
        assert status == 2 and message in err and "Traceback" not in err
        assert not (tmp_path / "bad.numsnet.pt").exists()


def test_train_class_weights_take_effect_or_are_refused(nifti_pair, tmp_path, capsys):
    image_path, labels_path = nifti_pair
    ckpt = tmp_path / "weighted.numsnet.pt"
    common = ["train", "--image", image_path, "--labels", labels_path, "--annotated", "3,5",
              "--num-classes", "6", "--steps", "2", "--size", "32", *TINY]  # fmt: skip
    status, out, err = run(capsys, *common, "--class-weights", "frequency", "--output", ckpt)
    assert status == 0, err
    assert "classes weighted by frequency" in out
    assert load_checkpoint(ckpt).train_config.class_weights == "frequency"
    # The paper preset's BCE/2 + Dice has no cross-entropy to weigh: refused before training.
    bad = tmp_path / "bad.numsnet.pt"
    paper = [*common, "--preset", "paper", "--class-weights", "frequency", "--output", bad]
    status, _, err = run(capsys, *paper)
    assert status == 2 and "--class-weights frequency" in err and "fast preset" in err
    assert "Traceback" not in err and not bad.exists()
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in (*common, "--class-weights", "often", "--output", bad)])
    assert info.value.code == 2 and "invalid choice: 'often'" in capsys.readouterr().err


def test_train_semi_supervised_takes_effect_or_is_refused(nifti_pair, tmp_path, capsys):
    image_path, labels_path = nifti_pair
    common = ["train", "--image", image_path, "--labels", labels_path, "--annotated", "3,5",
              "--num-classes", "6", "--steps", "2", "--size", "32", *TINY]  # fmt: skip
    # The fast preset's term waits for 30 annotated slices, and says so; 0 switches it off.
    status, out, err = run(capsys, *common, "--output", tmp_path / "preset.numsnet.pt")
    assert status == 0, err
    assert "no semi-supervised term yet" in out
    assert load_checkpoint(tmp_path / "preset.numsnet.pt").train_config.semi_supervised == 1.0
    off = tmp_path / "off.numsnet.pt"
    status, out, err = run(capsys, *common, "--semi-supervised", "0", "--output", off)
    assert status == 0, err
    assert "semi-supervised" not in out
    assert load_checkpoint(off).train_config.semi_supervised == 0.0
    half = tmp_path / "half.numsnet.pt"
    status, _, err = run(capsys, *common, "--semi-supervised", "0.5", "--output", half)
    assert status == 0, err
    assert load_checkpoint(half).train_config.semi_supervised == 0.5
    bad = tmp_path / "bad.numsnet.pt"
    for value, message in (("-1", "--semi-supervised -1.0"), ("nan", "--semi-supervised nan")):
        status, _, err = run(capsys, *common, "--semi-supervised", value, "--output", bad)
        assert status == 2 and message in err and "Traceback" not in err
    status, _, err = run(
        capsys, *common, "--model", "numsnet", "--semi-supervised", "1", "--output", bad
    )
    assert status == 2 and "cannot learn from" in err and "Traceback" not in err
    assert not bad.exists()


def test_train_without_model_takes_the_default_for_the_image(nifti_pair, tmp_path, capsys):
    """CT in Hounsfield units gets DRSegUNet, any other image UNet; --model overrides."""
    image_path, labels_path = nifti_pair
    scan = nib.load(image_path)
    scaled = np.asarray(scan.dataobj, dtype=np.float32)
    scaled = (scaled - scaled.min()) / (scaled.max() - scaled.min())  # like MRI in [0, 1]
    mri_path = tmp_path / "mri.nii.gz"
    nib.save(nib.Nifti1Image(scaled, scan.affine), mri_path)
    common = ["train", "--labels", labels_path, "--annotated", "3,5", "--num-classes", "6",
              "--steps", "2", "--size", "32", *TINY]  # fmt: skip
    for image, expected, why in (
        (image_path, "drsegunet", "CT in Hounsfield units"),
        (mri_path, "unet", "not in Hounsfield units"),
    ):
        output = tmp_path / f"{expected}.numsnet.pt"
        status, out, err = run(capsys, *common, "--image", image, "--output", output)
        assert status == 0, err
        assert f"model {expected} (the default for" in out and why in out
        assert load_checkpoint(output).model_config.name == expected
    chosen = tmp_path / "chosen.numsnet.pt"
    status, out, err = run(
        capsys, *common, "--image", mri_path, "--model", "drsegunet", "--output", chosen
    )
    assert status == 0, err
    assert "model drsegunet;" in out and "the default for" not in out
    assert load_checkpoint(chosen).model_config.name == "drsegunet"


def test_every_option_has_a_help_text_that_shows_its_default(capsys):
    from napari_numsnet.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subcommands.items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or not action.option_strings:
                continue
            assert action.help, (name, action.option_strings)
        text = sub.format_help()
        for action in sub._actions:
            default = action.default
            if action.help == argparse.SUPPRESS or default in (None, argparse.SUPPRESS):
                continue
            if isinstance(default, bool) or not action.option_strings:
                continue
            assert f"(default: {default})" in " ".join(text.split()), (name, action.dest)
    assert "unetpp" in " ".join(subcommands["train"].format_help().split())  # --model lists


def test_train_with_context_builds_a_2_5d_model_and_refuses_it_for_numsnet(
    nifti_pair, tmp_path, capsys
):
    image_path, labels_path = nifti_pair
    common = ["--image", image_path, "--labels", labels_path, "--annotated", "3,5,7"]
    common += ["--num-classes", "6", "--epochs", "1", "--size", "32", *TINY]
    ckpt = tmp_path / "m.numsnet.pt"
    status, out, err = run(capsys, "train", *common, "--context", "1", "--output", ckpt)
    assert status == 0, err
    assert "with 2.5D context (1 slice each side)" in out
    assert load_checkpoint(ckpt).build_model().config.input_channels == 3
    refused = tmp_path / "n.numsnet.pt"
    status, _, err = run(
        capsys, "train", *common, "--model", "numsnet", "--context", "1", "--output", refused
    )
    assert status == 2 and "slice models only" in err and "Traceback" not in err
    assert not refused.exists()


def test_train_says_the_run_length_of_numsnet(nifti_pair, tmp_path, capsys):
    image_path, labels_path = nifti_pair
    status, out, err = run(
        capsys, "train", "--image", image_path, "--labels", labels_path, "--annotated", "3,5",
        "--num-classes", "6", "--epochs", "1", "--size", "32", "--model", "numsnet",
        "--output", tmp_path / "m.numsnet.pt", *TINY,
    )  # fmt: skip
    assert status == 0, err
    assert "model numsnet; preset fast: 1 epochs, runs of 4 slices, in both orders" in out


def test_train_without_annotated_says_every_labelled_slice_counts(nifti_pair, tmp_path, capsys):
    image_path, labels_path = nifti_pair
    status, out, err = run(
        capsys, "train", "--image", image_path, "--labels", labels_path, "--num-classes", "6",
        "--epochs", "1", "--size", "32", "--output", tmp_path / "m.numsnet.pt", *TINY,
    )  # fmt: skip
    assert status == 0, err
    assert "no --annotated: every slice with a label counts as annotated" in out


@pytest.mark.parametrize("start", ["--resume", "--transfer"])
def test_model_widths_and_context_beside_a_checkpoint_are_refused(
    nifti_pair, tmp_path, capsys, start
):
    image_path, labels_path = nifti_pair
    common = ["--image", image_path, "--labels", labels_path, "--output", tmp_path / "m.pt"]
    for option in (["--widths", "4,4,8,8,8"], ["--model", "unet"], ["--context", "1"]):
        status, _, err = run(capsys, "train", *common, start, tmp_path / "c.pt", *option)
        assert status == 2, err
        assert f"{option[0]} " in err and f"ignored beside {start}" in err
        assert "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()


def test_the_recipe_note_says_what_the_term_and_the_precision_do(monkeypatch):
    from napari_numsnet.commands.common import _recipe_note
    from napari_numsnet.engine import device as device_module
    from napari_numsnet.presets import PRESETS

    fast = PRESETS["fast"].train
    monkeypatch.setattr(device_module, "cpu_computes_bf16", lambda: False)
    assert _recipe_note("drsegunet", fast, "cpu", 148, 1200) == (
        ", semi-supervised (unimatch) on the unannotated slices"
    )
    assert _recipe_note("drsegunet", fast, "cpu", 3, 27) == (
        ", no semi-supervised term yet (3 annotated slices, fewer than the 30 the term waits for)"
    )
    # Every slice annotated: the trainer leaves the term out, and so does the note.
    assert _recipe_note("drsegunet", fast, "cpu", 148, 0) == (
        ", no semi-supervised term yet (no unannotated slice to learn from)"
    )
    assert _recipe_note("numsnet", fast, "cpu", 148, 1200) == (
        ", no semi-supervised term for this model"
    )
    assert _recipe_note("drsegunet", fast, "cpu", 148, 1200, exclusive=False).startswith(
        ", no semi-supervised term for"
    )
    assert _recipe_note("drsegunet", PRESETS["paper"].train, "cpu", 148, 1200) == ""
    monkeypatch.setattr(device_module, "cpu_computes_bf16", lambda: True)
    assert _recipe_note("drsegunet", fast, "cpu", 3, 27).endswith(", bfloat16 on this CPU")
    assert "bfloat16" not in _recipe_note("msdsunet", fast, "cpu", 148, 1200)  # 3D: float32
