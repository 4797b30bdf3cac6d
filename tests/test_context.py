"""2.5D input: neighbouring slices as channels for the slice models, in training, in
validation, in prediction (whole stack and slice ranges), in checkpoints and on the
command line; refused where it cannot apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet.config import PreprocessConfig, TrainConfig
from napari_numsnet.data.context import context_indices, with_context
from napari_numsnet.data.dataset import StackSample, TrainingStack
from napari_numsnet.engine.batches import SliceSource, make_source
from napari_numsnet.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from napari_numsnet.engine.predict import predict_stack, predict_volume
from napari_numsnet.engine.trainer import fit
from napari_numsnet.engine.validation import evaluate_stacks
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import MODELS, SLICE_MODELS, create_model
from napari_numsnet.models.base import ModelKind
from napari_numsnet.presets import PRESETS
from napari_numsnet.workflows.stacks import model_for_preset
from toys import square_images


def whole_stack(n: int = 10, annotated=(2, 5, 8), seed: int = 0) -> StackSample:
    images, labels = square_images(n, seed=seed)
    mask = np.zeros(n, bool)
    mask[list(annotated)] = True
    return StackSample(images, labels, mask, "stack")


def test_neighbours_are_channels_with_the_ends_repeated():
    rows = context_indices(5, [0, 2, 4], context=2)
    assert rows.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [2, 3, 4, 4, 4]]
    images = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 3, 4), np.float32)
    out = with_context(images, 1)
    assert out.shape == (5, 3, 3, 4)
    assert out[:, 1, 0, 0].tolist() == [0, 1, 2, 3, 4]  # the centre channel is the slice
    assert out[:, 0, 0, 0].tolist() == [0, 0, 1, 2, 3]  # the slice before it
    assert out[:, 2, 0, 0].tolist() == [1, 2, 3, 4, 4]  # the slice after it
    assert np.array_equal(with_context(images, 0)[:, 0], images)
    with pytest.raises(NumsnetError, match="below 0"):
        context_indices(5, [0], -1)


def test_each_registry_entry_declares_its_model_s_kind(tiny_config):
    kinds = {name: create_model(tiny_config(name)).kind for name in MODELS}
    assert kinds == {name: spec.kind for name, spec in MODELS.items()}
    assert set(SLICE_MODELS) == {n for n, k in kinds.items() if k is ModelKind.SLICE}


def test_training_batches_hold_the_unannotated_neighbours_as_channels():
    stack = whole_stack()
    source = make_source(ModelKind.SLICE, [stack], batch_size=3, unlabelled_per_batch=2, context=1)
    batch = next(source.epoch(torch.Generator().manual_seed(0)))
    assert batch.images.shape == (3, 3, 32, 32) and batch.unlabelled.shape == (2, 3, 32, 32)
    for image, label in zip(batch.images.numpy(), batch.labels.numpy(), strict=True):
        z = next(
            z for z in np.flatnonzero(stack.annotated) if np.array_equal(stack.labels[z], label)
        )
        assert np.array_equal(image, stack.images[[z - 1, z, z + 1]])  # neighbours unannotated


def test_annotated_slices_alone_cannot_give_context():
    images, labels = square_images(4)
    with pytest.raises(NumsnetError, match="whole stacks"):
        SliceSource([TrainingStack(images, labels, np.arange(4))], 2, context=1)


@pytest.mark.parametrize("name", SLICE_MODELS)
def test_every_slice_model_trains_validates_and_predicts_with_context(name, tiny_config):
    torch.manual_seed(0)
    model = create_model(tiny_config(name, context=1))
    assert model.config.input_channels == 3
    val = whole_stack(annotated=(4,), seed=1)
    config = TrainConfig(steps=3, batch_size=2, learning_rate=1e-2, device="cpu", amp=False)
    result = fit(model, [whole_stack()], config, val_stacks=[val])  # augmentation on
    assert result.record["steps_done"] == 3 and result.record["epochs"]  # trained, validated
    assert set(evaluate_stacks(model, [val], ["background", "square"], torch.device("cpu")))
    prob = predict_stack(model, val.images)
    assert prob.shape == (2, 10, 32, 32) and np.isfinite(prob).all()


def test_the_semi_supervised_term_takes_the_context_too(tiny_config):
    torch.manual_seed(0)
    model = create_model(tiny_config("drsegunet", context=1))
    config = TrainConfig(steps=2, batch_size=2, semi_supervised=1.0, device="cpu", amp=False)
    fit(model, [whole_stack()], config)


@pytest.mark.parametrize("name", sorted(set(MODELS) - set(SLICE_MODELS)))
def test_models_that_see_neighbours_already_refuse_context(name, tiny_config):
    with pytest.raises(NumsnetError, match=r"2\.5D context is for slice models only"):
        create_model(tiny_config(name, context=1))


def test_the_prediction_reads_the_neighbours_and_slice_ranges_keep_them(tiny_config):
    torch.manual_seed(0)
    model = create_model(tiny_config("drsegunet", context=1)).eval()
    images, _ = square_images(8)
    base = predict_stack(model, images)
    changed = images.copy()
    changed[4] += 1.0  # only slice 4 changes: slices 3, 4 and 5 see it
    diff = np.abs(predict_stack(model, changed) - base).max(axis=(0, 2, 3))
    assert (diff[[3, 4, 5]] > 1e-4).all() and (diff[[0, 1, 2, 6, 7]] < 1e-6).all()
    part = predict_stack(model, images, slices=np.array([2, 3]))
    assert np.allclose(part, base[:, 2:4], atol=1e-5)
    stack = (images * 100).astype(np.float32)
    preprocess = PreprocessConfig(size=None, normalization="none")
    whole = predict_volume(model, stack, preprocess).probabilities
    ranged = predict_volume(model, stack, preprocess, slice_range=(3, 5)).probabilities
    assert np.allclose(ranged[:, 3:5], whole[:, 3:5], atol=1e-5)  # the neighbours outside
    assert not ranged[:, :3].any()


def test_context_survives_a_checkpoint(tiny_config, tmp_path):
    model = create_model(tiny_config("unet", context=2))
    path = tmp_path / "c.numsnet.pt"
    checkpoint = Checkpoint.from_model(
        model, preprocess=PreprocessConfig(), class_names=["a", "b"]
    )
    save_checkpoint(checkpoint, path)
    rebuilt = load_checkpoint(path).build_model()
    assert rebuilt.config.context == 2 and rebuilt.config.input_channels == 5


def test_a_preset_s_context_goes_to_slice_models_only():
    preset = PRESETS["fast"].__class__(name="ctx", context=1)
    assert model_for_preset("drsegunet", 3, preset).context == 1
    assert model_for_preset("numsnet", 3, preset).context == 0
