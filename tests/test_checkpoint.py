"""Checkpoints: round trip, atomic writes, damaged files, resume, transfer to new classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet import pipeline
from napari_numsnet.engine import checkpoint as checkpoint_module
from napari_numsnet.engine.checkpoint import (
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
    transfer_model,
)
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import create_model
from napari_numsnet.workflows import training as training_module

ANNOTATED = [1, 3, 5, 8]  # slice 8 held out for validation: 3 training slices


@pytest.fixture
def stack(synthetic_volume):
    image, labels = synthetic_volume
    return pipeline.AnnotatedStack(image, labels, ANNOTATED, val_slices=[8], name="synthetic")


@pytest.fixture
def classes():
    return ClassTable.from_names(["background", "lung", "bone"])


@pytest.fixture
def trained(stack, classes, tiny_config, fast_training, pre32):
    """A 3-class tiny NUMSnet after 2 epochs (3 steps each: one run per annotated slice)."""
    return pipeline.train(
        stack, tiny_config("numsnet", 3), fast_training.replace(epochs=2), pre32, classes
    )


def adam_steps(optimizer_state) -> set[int]:
    return {int(s["step"]) for s in optimizer_state["state"].values()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_round_trip_keeps_everything(trained, tmp_path):
    path = save_checkpoint(trained, tmp_path / "model.numsnet.pt")
    loaded = load_checkpoint(path)
    assert_same_weights(loaded.state_dict, trained.state_dict)
    assert loaded.model_config == trained.model_config
    assert loaded.model_config.widths == (4, 8, 8, 8, 8)
    assert loaded.preprocess == trained.preprocess
    assert loaded.preprocess.size == 32
    assert loaded.train_config == trained.train_config
    assert loaded.class_names == ["background", "lung", "bone"]
    assert loaded.record == trained.record
    assert loaded.epochs_done == 2
    assert loaded.record["annotated"] == {"synthetic": [1, 3, 5]}
    assert adam_steps(loaded.optimizer_state) == {6}
    # The rebuilt model computes what the original computes.
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        expected = trained.build_model()(x).logits
        assert torch.equal(loaded.build_model()(x).logits, expected)


def test_failed_save_leaves_the_old_checkpoint_intact(trained, tmp_path, monkeypatch):
    path = save_checkpoint(trained, tmp_path / "model.numsnet.pt")
    old_bytes = path.read_bytes()
    newer = Checkpoint.from_model(
        create_model(trained.model_config),
        preprocess=trained.preprocess,
        class_names=["a", "b", "c"],
    )

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(newer, path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert load_checkpoint(path).class_names == ["background", "lung", "bone"]
    assert [p.name for p in tmp_path.iterdir()] == ["model.numsnet.pt"]  # no temporary left


def test_missing_checkpoint(tmp_path):
    with pytest.raises(NumsnetError, match="No checkpoint") as info:
        load_checkpoint(tmp_path / "nothing.numsnet.pt")
    assert "numsnet train" in info.value.fix


def test_random_bytes_are_a_damaged_checkpoint(tmp_path):
    path = tmp_path / "noise.numsnet.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(NumsnetError, match="damaged"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_damaged(trained, tmp_path):
    path = save_checkpoint(trained, tmp_path / "model.numsnet.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(NumsnetError, match="damaged"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "content", [{"weights": torch.zeros(3)}, torch.ones(2, 2), {"format": "other", "version": 1}]
)
def test_other_torch_file_is_not_a_checkpoint(content, tmp_path):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(NumsnetError, match="not a napari-numsnet checkpoint"):
        load_checkpoint(path)


def test_resume_continues_epochs_weights_and_optimizer(
    trained, stack, fast_training, tmp_path, monkeypatch
):
    saved = load_checkpoint(save_checkpoint(trained, tmp_path / "first.numsnet.pt"))
    real_fit = training_module.fit
    start_weights = {}

    def spy(model, *args, **kwargs):
        start_weights.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(training_module, "fit", spy)
    resumed = pipeline.train(stack, training=fast_training.replace(epochs=3), resume=saved)
    assert_same_weights(start_weights, saved.state_dict)
    assert resumed.epochs_done == 5
    assert saved.epochs_done == 2 and len(saved.record["epochs"]) == 2  # input left alone
    assert [e["epoch"] for e in resumed.record["epochs"]] == [1, 2, 3, 4, 5]
    # Adam's step counter went on from 6 (2 epochs of 3 runs) to 6 + 3 x 3.
    assert adam_steps(resumed.optimizer_state) == {15}
    assert resumed.model_config == saved.model_config
    assert resumed.preprocess == saved.preprocess
    assert resumed.class_names == saved.class_names
    assert any(
        not torch.equal(resumed.state_dict[k], saved.state_dict[k]) for k in saved.state_dict
    )


def test_resume_ignores_the_model_argument(trained, stack, fast_training, tiny_config):
    resumed = pipeline.train(
        stack, tiny_config("unet", 3), fast_training, resume=trained, classes=None
    )
    assert resumed.model_config.name == "numsnet"
    assert resumed.epochs_done == 3


def test_resume_with_another_number_of_classes_points_to_transfer(trained, stack, fast_training):
    five = ClassTable.default(5)
    with pytest.raises(NumsnetError, match="transfer") as info:
        pipeline.train(stack, training=fast_training, classes=five, resume=trained)
    assert "3 classes" in info.value.problem


def test_transfer_reuses_every_layer_but_the_head(trained):
    """The NUMSnet paper's transfer: lung CT (3 classes) to heart CT (7 classes)."""
    model = transfer_model(trained, 7)
    assert model.config.num_classes == 7
    assert model.config.widths == trained.model_config.widths
    new = model.state_dict()
    assert new.keys() == trained.state_dict.keys()
    heads = {k for k in new if k.startswith("head.")}
    assert heads == {"head.weight", "head.bias"}
    for key in new.keys() - heads:
        assert torch.equal(new[key], trained.state_dict[key]), key
    assert new["head.weight"].shape == (7, 4, 1, 1)
    assert new["head.bias"].shape == (7,)
    assert trained.state_dict["head.weight"].shape == (3, 4, 1, 1)


def test_transfer_through_the_pipeline_trains_seven_classes(
    trained, synthetic_volume, fast_training
):
    image, labels = synthetic_volume
    labels = labels.copy()
    labels[:, 2:6, 2:6] = 6  # a seventh label value
    stack = pipeline.AnnotatedStack(image, labels, [2, 4, 6])
    seven = ClassTable.default(7)
    result = pipeline.train(
        stack,
        trained.model_config.replace(num_classes=7),
        fast_training,
        classes=seven,
        transfer_from=trained,
    )
    assert result.model_config.num_classes == 7
    assert result.record["transferred_from"] == "numsnet"
    assert result.preprocess == trained.preprocess  # the source model's input preparation
    assert result.state_dict["head.weight"].shape[0] == 7


def test_transfer_refuses_weights_that_do_not_fit_the_model(trained):
    other = create_model(trained.model_config.replace(widths=(4, 8, 8, 8, 16)))
    mismatched = Checkpoint(
        model_config=trained.model_config,
        preprocess=trained.preprocess,
        class_names=trained.class_names,
        state_dict=other.state_dict(),
    )
    with pytest.raises(NumsnetError, match="same model and widths"):
        transfer_model(mismatched, 7)


def test_incomplete_checkpoint_is_damaged(tmp_path):
    path = tmp_path / "stub.numsnet.pt"
    torch.save({"format": checkpoint_module.FORMAT, "version": 1, "class_names": ["a"]}, path)
    with pytest.raises(NumsnetError, match="incomplete") as info:
        load_checkpoint(path)
    assert "damaged" in info.value.fix


def test_weights_that_do_not_fit_the_model_are_reported(trained, tmp_path):
    state = dict(trained.state_dict)
    state["head.weight"] = torch.zeros(5, 4, 1, 1)
    path = save_checkpoint(
        Checkpoint(trained.model_config, trained.preprocess, trained.class_names, state),
        tmp_path / "edited.numsnet.pt",
    )
    with pytest.raises(NumsnetError, match="do not fit") as info:
        load_checkpoint(path).build_model()
    assert "damaged" in info.value.fix
