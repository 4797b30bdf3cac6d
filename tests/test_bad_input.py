"""Every bad input of the specification fails with a NumsnetError that says what and how.

Each case asserts key words of the problem (what is wrong) and of the fix (what to do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PreprocessConfig
from napari_numsnet.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable
from napari_numsnet.models import create_model
from napari_numsnet.presets import get_preset

PRE = PreprocessConfig(size=32)


@pytest.fixture
def train(tiny_config, fast_training):
    """``train(image, labels, annotated=None, **kwargs)`` with a tiny 3-class NUMSnet."""

    def run(image, labels, annotated=None, **kwargs):
        stack = pipeline.AnnotatedStack(image, labels, annotated)
        kwargs.setdefault("training", fast_training)
        return pipeline.train(stack, tiny_config("numsnet", 3), preprocess=PRE, **kwargs)

    return run


@pytest.fixture
def checkpoint(tiny_config):
    return Checkpoint.from_model(
        create_model(tiny_config("numsnet", 3)), preprocess=PRE, class_names=["bg", "a", "b"]
    )


@contextlib.contextmanager
def expect(problem_words: list[str], fix_words: list[str]) -> Iterator[None]:
    """The body must raise a NumsnetError whose problem and fix hold these words."""
    with pytest.raises(NumsnetError) as info:
        yield
    error = info.value
    for word in problem_words:
        assert word.lower() in error.problem.lower(), (word, error.problem)
    for word in fix_words:
        assert word.lower() in error.fix.lower(), (word, error.fix)


def test_single_image_for_training(train, synthetic_volume):
    image, labels = synthetic_volume
    with expect(["shape (40, 36)", "stack"], ["whole volume", "not a single slice"]):
        train(image[0], labels[0], annotated=[0])


def test_single_image_for_prediction(checkpoint, synthetic_volume):
    image, _ = synthetic_volume
    with expect(["(40, 36)", "stack"], ["whole volume"]):
        pipeline.predict(checkpoint, image[0])


def test_labels_of_another_shape(train, synthetic_volume):
    image, labels = synthetic_volume
    with expect(["(10, 40, 36)", "(10, 40, 30)"], ["labels drawn on this very image"]):
        train(image, labels[:, :, :30], annotated=[2])


def test_labels_of_another_number_of_slices(train, synthetic_volume):
    image, labels = synthetic_volume
    with expect(["(9, 40, 36)"], ["same number of slices"]):
        train(image, labels[:9], annotated=[2])


def test_label_values_beyond_the_classes(train, synthetic_volume):
    image, labels = synthetic_volume
    labels = labels.copy()
    labels[3, :4, :4] = 7
    with expect(["values [7]", "0..2"], ["num_classes", "relabel"]):
        train(image, labels, annotated=[3, 5])


def test_negative_label_values(train, synthetic_volume):
    image, labels = synthetic_volume
    labels = labels.astype(np.int16)
    labels[3, 0, 0] = -1
    with expect(["negative", "-1"], ["relabel"]):
        train(image, labels, annotated=[3])


def test_nan_image(train, synthetic_volume):
    image, labels = synthetic_volume
    image = image.copy()
    image[4, 10, 10] = np.nan
    with expect(["1 NaN"], ["replace them"]):
        train(image, labels, annotated=[2, 4])


def test_nan_image_for_prediction(checkpoint, synthetic_volume):
    image, _ = synthetic_volume
    image = image.copy()
    image[0, 0, 0] = np.inf
    with expect(["NaN or infinite"], ["fix the file"]):
        pipeline.predict(checkpoint, image)


def test_constant_image(train, synthetic_volume):
    _, labels = synthetic_volume
    with expect(["constant", "nothing to learn"], ["another stack"]):
        train(np.full(labels.shape, 40.0, dtype=np.float32), labels, annotated=[2, 3])


def test_empty_annotation(train, synthetic_volume):
    image, labels = synthetic_volume
    with expect(["no slice is annotated"], ["paint at least one slice"]):
        train(image, np.zeros_like(labels))
    with expect(["no slice is annotated"], ["paint"]):
        train(image, labels, annotated=[])


def test_fewer_annotated_slices_than_a_batch_trains_with_a_smaller_batch(
    train, synthetic_volume, fast_training
):
    image, labels = synthetic_volume
    checkpoint = train(
        image, labels, annotated=[2, 6], training=fast_training.replace(batch_size=5)
    )
    assert checkpoint.record["train_slices"] == 2
    assert checkpoint.record["steps_done"] == 2  # NUMSnet: one run per annotated slice


def test_annotated_index_outside_the_stack(train, synthetic_volume):
    image, labels = synthetic_volume
    with expect(["[12]", "outside the stack"], ["stack axis"]):
        train(image, labels, annotated=[2, 12])


def test_every_annotated_slice_held_out(tiny_config, synthetic_volume):
    image, labels = synthetic_volume
    stack = pipeline.AnnotatedStack(image, labels, [2, 3], val_slices=[2, 3])
    with expect(["held out for validation"], ["annotate more slices"]):
        pipeline.build_training_data([stack], tiny_config("numsnet", 3), PRE)


def test_missing_checkpoint(tmp_path):
    with expect(["no checkpoint"], ["numsnet train", "*.numsnet.pt"]):
        load_checkpoint(tmp_path / "absent.numsnet.pt")


def test_corrupt_checkpoint(checkpoint, tmp_path):
    path = save_checkpoint(checkpoint, tmp_path / "model.numsnet.pt")
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:1000]))
    with expect(["cannot be read"], ["damaged", "retrain"]):
        load_checkpoint(path)


def test_checkpoint_for_another_number_of_classes(checkpoint, train, synthetic_volume):
    image, labels = synthetic_volume
    with expect(["3 classes", "labels have 5"], ["transfer"]):
        train(image, labels, annotated=[2, 3], resume=checkpoint, classes=ClassTable.default(5))


def test_class_table_that_disagrees_with_the_model(train, synthetic_volume):
    image, labels = synthetic_volume
    with expect(["4 label values", "predicts 3"], ["agree"]):
        train(image, labels, annotated=[2, 3], classes=ClassTable.default(4))


@pytest.mark.parametrize("name", ["resnet", "u-net 3d", ""])
def test_unknown_model_name(name):
    with expect(["unknown model"], ["numsnet", "drsegunet", "unet"]):
        create_model(ModelConfig(name))


def test_unknown_model_name_through_the_pipeline():
    with expect(["unknown model", "transunet"], ["numsnet"]):
        pipeline.model_for_preset("transunet", 3, get_preset("fast"))


def test_unknown_preset():
    with expect(["unknown preset", "'slow'"], ["fast", "paper"]):
        get_preset("slow")
