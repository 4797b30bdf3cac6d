"""CHS-Net's cascade: region first, classes inside it; any registry model per stage."""

from __future__ import annotations

import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet.cli import main
from napari_numsnet.config import PredictConfig
from napari_numsnet.engine.checkpoint import Checkpoint, save_checkpoint
from napari_numsnet.engine.predict import Prediction
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.io.volume import volume_from_array
from napari_numsnet.workflows import cascade

CLASSES = ClassTable.from_names(["background", "lung", "opacity"])


def lung_stack(n: int = 6, size: int = 32, seed: int = 0) -> pipeline.AnnotatedStack:
    """A dark 'lung' disc (label 1) holding a brighter 'opacity' (label 2), in tissue."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    lung = (yy - 16) ** 2 + (xx - 16) ** 2 < 11**2
    opacity = (yy - 14) ** 2 + (xx - 18) ** 2 < 4**2
    image = np.where(lung, -850.0, 40.0) + np.where(opacity, 450.0, 0.0)
    image = np.repeat(image[None], n, 0) + rng.normal(0, 10, (n, size, size))
    labels = np.repeat((lung.astype(np.uint8) + opacity)[None], n, 0)
    return pipeline.AnnotatedStack(image.astype(np.float32), labels, annotated=range(n))


def test_mask_image_sets_outside_to_the_minimum():
    image = np.array([[[5.0, -3.0], [7.0, 1.0]]])
    region = np.array([[[True, False], [False, True]]])
    assert cascade.mask_image(image, region).tolist() == [[[5.0, -3.0], [-3.0, 1.0]]]


def test_stages_are_trained_on_region_and_masked_image(
    monkeypatch, tiny_config, fast_training, pre32
):
    seen = []

    def spy(stacks, model, training, preprocess=None, classes=None, **kwargs):
        seen.append((stacks, model, classes))
        return real_train(stacks, model, training, preprocess, classes, **kwargs)

    real_train = pipeline.train
    monkeypatch.setattr(cascade, "train", spy)
    stack = lung_stack()
    cascade.train_cascade(
        stack,
        tiny_config("unetpp"),
        tiny_config("numsnet", num_classes=3),
        fast_training,
        pre32,
        CLASSES,
    )
    (region_stacks, region_model, region_classes), (inner_stacks, inner_model, _) = seen
    assert region_model.name == "unetpp" and region_model.num_classes == 2
    assert region_classes.names == ("background", "region")
    np.testing.assert_array_equal(region_stacks[0].labels, stack.labels > 0)
    assert inner_model.name == "numsnet"
    outside = stack.labels == 0
    assert np.all(inner_stacks[0].image[outside] == stack.image.min())
    np.testing.assert_array_equal(inner_stacks[0].image[~outside], stack.image[~outside])


def test_prediction_is_zero_outside_the_predicted_region(
    monkeypatch, tiny_config, fast_training, pre32
):
    stack = lung_stack()
    trained = cascade.train_cascade(
        stack,
        tiny_config("raiunet"),
        tiny_config("raiunet", num_classes=3),
        fast_training,
        pre32,
        CLASSES,
    )
    region = np.zeros(stack.labels.shape, dtype=np.uint8)
    region[:, 8:20, 8:20] = 1
    inner = np.full(stack.labels.shape, 2, dtype=np.uint8)

    def fake_predict(checkpoint, image, config=None, slice_range=None, probabilities=False):
        return Prediction(region if checkpoint is trained.region else inner)

    monkeypatch.setattr(cascade, "predict", fake_predict)
    labels = trained.predict(stack.image).labels
    assert np.all(labels[region == 0] == 0)
    assert np.all(labels[region == 1] == 2)


def test_largest_component_applies_to_the_inner_classes_not_to_the_region(
    monkeypatch, tiny_config, fast_training, pre32
):
    stack = lung_stack()
    trained = cascade.train_cascade(
        stack,
        tiny_config("unet"),
        tiny_config("unet", num_classes=3),
        fast_training,
        pre32,
        CLASSES,
    )
    seen = {}
    region = np.zeros(stack.labels.shape, dtype=np.uint8)
    region[:, 2:6, 2:6] = region[:, 20:30, 20:30] = 1  # two pieces: both must stay

    def spy(checkpoint, image, config=None, slice_range=None, probabilities=False):
        stage = "region" if checkpoint is trained.region else "inner"
        seen[stage] = config.largest_component
        return Prediction(region if stage == "region" else np.ones_like(region))

    monkeypatch.setattr(cascade, "predict", spy)
    config = PredictConfig(largest_component=(1,))
    labels = trained.predict(stack.image, config).labels
    assert seen == {"region": (), "inner": (1,)}
    np.testing.assert_array_equal(labels, region)  # the region's two pieces are kept


def test_region_values_must_be_foreground(tiny_config, fast_training):
    with pytest.raises(Exception, match="1 or more"):
        cascade.train_cascade(
            lung_stack(),
            tiny_config(),
            tiny_config(num_classes=3),
            fast_training,
            region_values=[0],
        )


def test_save_and_load_predictor(tmp_path, tiny_config, fast_training, pre32):
    trained = cascade.train_cascade(
        lung_stack(),
        tiny_config("unet"),
        tiny_config("unetpp", num_classes=3),
        fast_training,
        pre32,
        CLASSES,
        region_values=[1, 2],
    )
    path = cascade.save_cascade(trained, tmp_path / "c.numsnet.pt")
    loaded = cascade.load_predictor(path)
    assert isinstance(loaded, cascade.Cascade)
    assert loaded.region_values == (1, 2)
    assert loaded.class_names == list(CLASSES.names)
    image = lung_stack().image
    np.testing.assert_array_equal(loaded.predict(image).labels, trained.predict(image).labels)
    single = save_checkpoint(trained.inner, tmp_path / "one.numsnet.pt")
    assert isinstance(cascade.load_predictor(single), Checkpoint)

    # save_predictor writes either kind; pipeline.predict takes either, slice range too.
    again = cascade.load_predictor(cascade.save_predictor(trained, tmp_path / "d.numsnet.pt"))
    assert isinstance(again, cascade.Cascade)
    whole = pipeline.predict(again, image, probabilities=True)
    part = pipeline.predict(again, image, slice_range=(1, 3), probabilities=True)
    # One contract with a checkpoint: full size, 0 outside the range.
    assert part.labels.shape == whole.labels.shape
    np.testing.assert_array_equal(part.labels[1:3], whole.labels[1:3])
    assert not part.labels[:1].any() and not part.labels[3:].any()
    np.testing.assert_allclose(part.probabilities[:, 1:3], whole.probabilities[:, 1:3])
    assert not part.probabilities[:, :1].any() and not part.probabilities[:, 3:].any()
    assert again.describe() == "cascade unet -> unetpp"
    assert again.model_config == trained.inner.model_config
    assert again.epochs_done == trained.inner.epochs_done == 1


def test_command_line_trains_and_predicts_a_cascade(tmp_path, capsys):
    stack = lung_stack(n=4)
    image = volume_from_array(stack.image)
    from napari_numsnet.io.labels import write_labels

    write_labels(tmp_path / "img.npy", stack.image.astype(np.int16), image.meta)
    write_labels(tmp_path / "lab.npy", stack.labels, image.meta)
    code = main(
        [
            "train",
            "--image",
            str(tmp_path / "img.npy"),
            "--labels",
            str(tmp_path / "lab.npy"),
            "--cascade",
            "unetpp",
            "--model",
            "numsnet",
            "--widths",
            "4,8,8,8,8",
            "--size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--output",
            str(tmp_path / "c.numsnet.pt"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "region: unetpp, inside: numsnet" in capsys.readouterr().out
    code = main(
        [
            "predict",
            "--checkpoint",
            str(tmp_path / "c.numsnet.pt"),
            "--input",
            str(tmp_path / "img.npy"),
            "--output",
            str(tmp_path / "pred.npy"),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert np.load(tmp_path / "pred.npy").shape == stack.labels.shape
