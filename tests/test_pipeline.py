"""The annotate-train-predict loop, training data from partial annotations, batch prediction."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PredictConfig, PreprocessConfig, SamplingConfig
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import create_model
from napari_numsnet.models.default_choice import default_model, default_model_reason
from napari_numsnet.presets import get_preset


@pytest.fixture
def checkpoint(tiny_config) -> Checkpoint:
    """An untrained tiny 3-class NUMSnet checkpoint on 32 px slices."""
    return Checkpoint.from_model(
        create_model(tiny_config("numsnet", 3)),
        preprocess=PreprocessConfig(size=32),
        class_names=["background", "a", "b"],
    )


def test_annotate_train_predict_scores_only_unseen_slices(sample, tiny_config, fast_training):
    image, reference, classes = sample.volume.data, sample.labels, sample.classes
    result = pipeline.annotate_train_predict(
        image,
        reference,
        classes,
        tiny_config("numsnet", classes.num_values),
        fast_training,
        PreprocessConfig(window=pipeline.CT_WINDOW, size=32),
        SamplingConfig(fraction=0.1, seed=0),
    )
    split = result.split
    assert len(split.train) == 3 and len(split.val) == 1  # 10% and 1% of the rest of 30
    assert result.checkpoint.record["annotated"] == {"stack": split.train.tolist()}
    assert result.checkpoint.record["val_slices"] == 1
    # Scored where it neither trained nor chose its weights: 26 of the 30 slices.
    seen = np.union1d(split.train, split.val)
    np.testing.assert_array_equal(result.unseen, np.setdiff1d(np.arange(30), seen))
    assert result.prediction.labels.shape == image.shape
    assert list(result.scores) == list(classes.names[1:])
    # The trained slices do not count: making them perfect changes no score.
    perfect_on_train = result.prediction.labels.copy()
    perfect_on_train[split.train] = reference[split.train]
    rescored = pipeline.evaluate(perfect_on_train, reference, classes, result.unseen)
    assert rescored == result.scores
    assert result.state.value == "done"


def test_unannotated_slices_never_enter_training(synthetic_volume, tiny_config, fast_training):
    image, labels = synthetic_volume
    garbage = labels.astype(np.int64)
    garbage[[0, 3, 7, 9]] = 99  # beyond the classes; never annotated
    garbage[4] = -5
    stack = pipeline.AnnotatedStack(image, garbage, annotated=[2, 5, 6], val_slices=[6])
    model = tiny_config("numsnet", 3)
    train, val = pipeline.build_training_data([stack], model, PreprocessConfig(size=32))
    assert train[0].slice_index.tolist() == [2, 5]
    assert val[0].slice_index.tolist() == [6]
    assert set(np.unique(train[0].labels)) <= {0, 1, 2}
    # The whole training run accepts the garbage outside the annotation.
    checkpoint = pipeline.train(stack, model, fast_training, PreprocessConfig(size=32))
    assert checkpoint.record["annotated"] == {"stack": [2, 5]}
    assert checkpoint.record["train_slices"] == 2


def test_annotated_none_means_every_labelled_slice(synthetic_volume, tiny_config):
    image, labels = synthetic_volume
    partial = np.zeros_like(labels)
    partial[[1, 3, 4]] = labels[[1, 3, 4]]
    stack = pipeline.AnnotatedStack(image, partial)
    train, val = pipeline.build_training_data(
        [stack], tiny_config("numsnet", 3), PreprocessConfig(size=32)
    )
    assert train[0].slice_index.tolist() == [1, 3, 4]
    assert val == []


def test_a_recorded_empty_slice_is_an_annotation(synthetic_volume, tiny_config):
    image, labels = synthetic_volume
    partial = np.zeros_like(labels)
    partial[2] = labels[2]
    stack = pipeline.AnnotatedStack(image, partial, annotated=[0, 2])  # slice 0 all background
    train, _ = pipeline.build_training_data(
        [stack], tiny_config("numsnet", 3), PreprocessConfig(size=32)
    )
    assert train[0].slice_index.tolist() == [0, 2]
    assert not train[0].labels[0].any()


def _write_stacks(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    shapes = {"a.npy": (4, 20, 24), "b.npy": (3, 40, 18)}
    for name, shape in shapes.items():
        np.save(folder / name, rng.normal(0, 1, shape).astype(np.float32))
    (folder / "notes.txt").write_text("not a stack")
    return shapes


def test_predict_files_writes_skips_and_overwrites(checkpoint, tmp_path):
    shapes = _write_stacks(tmp_path / "in")
    out = tmp_path / "out"
    config = PredictConfig(batch_size=2, device="cpu")
    done = pipeline.predict_files(checkpoint, [tmp_path / "in"], out, config)
    assert [(src.name, dst.name) for src, dst in done] == [
        ("a.npy", "a_labels.npy"),
        ("b.npy", "b_labels.npy"),
    ]
    for name, shape in shapes.items():
        written = np.load(out / name.replace(".npy", "_labels.npy"))
        assert written.shape == shape
        assert np.issubdtype(written.dtype, np.integer)
        assert written.min() >= 0 and written.max() <= 2
    # Date the outputs back: a second run must leave them alone.
    old = 1_000_000_000
    for path in out.iterdir():
        os.utime(path, ns=(old, old))
    pipeline.predict_files(checkpoint, [tmp_path / "in"], out, config)
    assert all(p.stat().st_mtime_ns == old for p in out.iterdir())
    pipeline.predict_files(checkpoint, [tmp_path / "in"], out, config, overwrite=True)
    assert all(p.stat().st_mtime_ns != old for p in out.iterdir())
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.npy", "b_labels.npy"]


def test_predict_files_refuses_two_stacks_with_the_same_output_name(checkpoint, tmp_path):
    _write_stacks(tmp_path / "x")
    _write_stacks(tmp_path / "y")
    config = PredictConfig(device="cpu")
    with pytest.raises(NumsnetError, match="would both be written"):
        pipeline.predict_files(
            checkpoint, [tmp_path / "x", tmp_path / "y"], tmp_path / "o", config
        )
    assert not list((tmp_path / "o").glob("*_labels.npy"))


def test_predict_files_matches_predict(checkpoint, tmp_path):
    stack = np.random.default_rng(5).normal(0, 1, (5, 24, 28)).astype(np.float32)
    np.save(tmp_path / "one.npy", stack)
    target = tmp_path / "one_pred.npy"
    config = PredictConfig(batch_size=2, device="cpu")
    done = pipeline.predict_files(
        checkpoint, [tmp_path / "one.npy"], target, config, probabilities=True
    )
    assert done == [(tmp_path / "one.npy", target)]  # one input: the output is a file
    expected = pipeline.predict(checkpoint, stack, config, probabilities=True)
    np.testing.assert_array_equal(np.load(target), expected.labels)
    probabilities = np.load(tmp_path / "one_pred_probabilities.npy")
    np.testing.assert_allclose(probabilities, expected.probabilities, atol=1e-6)


def test_evaluate_restricts_to_the_given_slices():
    reference = np.zeros((3, 2, 2), dtype=np.uint8)
    reference[:, 0, :] = 1  # two class-1 pixels per slice
    predicted = reference.copy()
    predicted[1] = 0  # slice 1: both missed
    predicted[2, 1, 0] = 1  # slice 2: one false positive
    classes = ClassTable.default(2)
    on_0 = pipeline.evaluate(predicted, reference, classes, slices=[0])
    assert on_0["class 1"]["dice"] == pytest.approx(1.0)
    on_1_2 = pipeline.evaluate(predicted, reference, classes, slices=[1, 2])
    # TP 2, FP 1, FN 2: Dice 4 / 7, precision 2 / 3, recall 1 / 2.
    assert on_1_2["class 1"]["dice"] == pytest.approx(4 / 7)
    assert on_1_2["class 1"]["precision"] == pytest.approx(2 / 3)
    assert on_1_2["class 1"]["recall"] == pytest.approx(0.5)
    # All slices: TP 4, FP 1, FN 2 -> Dice 8 / 11.
    whole = pipeline.evaluate(predicted, reference, classes)
    assert whole["class 1"]["dice"] == pytest.approx(8 / 11)


def test_plan_and_preset_helpers(synthetic_volume):
    split = pipeline.plan_slices(30)
    assert len(split.train) == 3 and len(split.val) == 1
    assert not set(split.train) & set(split.val)
    fast = pipeline.model_for_preset("numsnet", 6, get_preset("fast"))
    assert fast == ModelConfig("numsnet", num_classes=6, widths=(18, 35, 70, 140, 280))
    paper = pipeline.model_for_preset("NUMSnet", 6, get_preset("paper"))
    assert paper.widths is None and paper.name == "numsnet"
    image, _ = synthetic_volume
    ct = pipeline.default_preprocess(image)
    assert ct.window == pipeline.CT_WINDOW and ct.clip_percentiles is None
    mri = pipeline.default_preprocess(image / 1000.0 + 5.0)
    assert mri.window is None and mri.clip_percentiles is None
    # what the caller set is kept: clipping percentiles (no window added), or a window
    kept = PreprocessConfig(clip_percentiles=(0.5, 99.5))
    assert pipeline.default_preprocess(image, kept) == kept
    windowed = PreprocessConfig(window=(0.0, 10.0))
    assert pipeline.default_preprocess(image / 1000.0 + 5.0, windowed) == windowed


def test_predict_files_into_the_input_folder_does_not_predict_its_outputs(checkpoint, tmp_path):
    _write_stacks(tmp_path / "in")
    config = PredictConfig(batch_size=2, device="cpu")
    pipeline.predict_files(checkpoint, [tmp_path / "in"], tmp_path / "in", config)
    again = pipeline.predict_files(checkpoint, [tmp_path / "in"], tmp_path / "in", config)
    assert [src.name for src, _ in again] == ["a.npy", "b.npy"]
    assert sorted(p.name for p in (tmp_path / "in").glob("*.npy")) == [
        "a.npy",
        "a_labels.npy",
        "b.npy",
        "b_labels.npy",
    ]


def test_the_default_model_follows_the_image(sample):
    """CT in Hounsfield units -> DRSegUNet; MRI-like, 8-bit or z-scored data -> UNet."""
    ct = sample.volume.data
    assert default_model(ct) == "drsegunet"
    assert "Hounsfield" in default_model_reason("drsegunet")
    scaled = (ct - ct.min()) / (ct.max() - ct.min())
    rng = np.random.default_rng(0)
    for image in (
        scaled,
        (scaled * 255).astype(np.uint8),
        (ct - ct.mean()) / ct.std(),
        rng.normal(300.0, 120.0, (4, 16, 16)),  # MRI in scanner units
    ):
        assert default_model(image) == "unet"
    assert "not in Hounsfield" in default_model_reason("unet")
