"""The annotation, training and prediction controllers without Qt and without a window.

A ``ViewerModel`` (napari's viewer without its Qt window) holds the layers; the
controllers' results come back at once in the worker thread (``deliver`` left at its
default), so a test joins the thread and looks.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_numsnet import pipeline
from napari_numsnet._napari import training as training_module
from napari_numsnet._napari._reader import read_nifti
from napari_numsnet._napari.annotation import MIN_TRAINING_SLICES, AnnotationController
from napari_numsnet._napari.prediction import PredictController
from napari_numsnet._napari.tasks import frozen_heap
from napari_numsnet._napari.training import TrainController
from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine.events import TrainState
from napari_numsnet.errors import NumsnetError


def test_the_controllers_import_no_qt():
    code = (
        "import sys\n"
        "import napari_numsnet._napari.annotation, napari_numsnet._napari.training\n"
        "import napari_numsnet._napari.prediction, napari_numsnet._napari.tasks\n"
        "import napari_numsnet._napari.shortcuts\n"
        "qt = [m for m in sys.modules if m.startswith(('PyQt', 'PySide', 'qtpy', 'napari._qt'))]\n"
        "print(qt)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def controllers(ct_path):
    viewer = ViewerModel()
    (data, kwargs, _), *_ = read_nifti(str(ct_path))
    viewer.add_image(data, **kwargs)
    annotation = AnnotationController(viewer)
    annotation.set_image(viewer.layers["ct"])
    training = TrainController(annotation)
    return viewer, annotation, training, PredictController(training)


def tiny(training: TrainController, epochs: int = 2) -> None:
    s = training.settings
    s.model = ModelConfig("numsnet", widths=(4, 8, 8, 8, 8))
    s.training = TrainConfig(epochs=epochs, batch_size=2, device="cpu", amp=False, augment=False)
    s.preprocess = PreprocessConfig(size=32)


def test_train_and_predict_without_a_window(controllers):
    viewer, a, t, p = controllers
    reference = pipeline.load_sample().labels
    a.new_labels_layer(pipeline.load_sample().classes)
    for z in a.planned:
        a.labels.data[z] = reference[z]
        a.mark(int(z))
    tiny(t)
    states, kinds = [], []
    t.state_changed.connect(states.append)
    t.progress.connect(lambda event: kinds.append(event.kind))
    thread = t.start()
    t.settings.training = t.settings.training.replace(epochs=50)  # after the start: not used
    thread.join(120)
    assert states == [TrainState.TRAINING, TrainState.DONE]
    assert kinds[0] == "start" and kinds[-1] == "end" and "step" in kinds
    assert t.run_settings.training.epochs == 2 and t.checkpoint.epochs_done == 2
    p.start().join(120)
    layer = p.prediction_layer()
    expected = pipeline.predict(t.checkpoint, viewer.layers["ct"].data).labels
    np.testing.assert_array_equal(layer.data, expected)
    assert layer.features["class"].tolist() == list(a.classes.names)


def test_a_second_pair_and_a_transfer_to_another_class_set(controllers, tmp_path):
    viewer, a, t, _ = controllers
    reference = pipeline.load_sample().labels
    a.new_labels_layer()  # background and one class
    a.labels.data[15] = reference[15] > 0
    a.mark(15)
    second = viewer.add_image(np.array(viewer.layers["ct"].data[::-1]), name="flipped")
    labels = viewer.add_labels((reference[::-1] > 0).astype(np.uint8), name="flipped labels")
    t.add_pair(second, labels)
    tiny(t, epochs=1)
    t.start().join(120)
    assert t.state is TrainState.DONE
    annotated = t.checkpoint.record["annotated"]
    assert annotated["ct"] == [15] and len(annotated["flipped"]) == int(
        (reference > 0).reshape(30, -1).any(axis=1).sum()
    )
    # Another class set from that checkpoint: every layer but the head is reused.
    path = tmp_path / "binary.numsnet.pt"
    from napari_numsnet.engine.checkpoint import save_checkpoint

    save_checkpoint(t.checkpoint, path)
    t.pairs.clear()
    a.set_classes(pipeline.load_sample().classes)
    t.settings.transfer_from = str(path)
    t.start().join(120)
    assert t.state is TrainState.DONE
    assert t.checkpoint.record.get("transferred_from") == "numsnet"
    assert len(t.checkpoint.class_names) == 6


def test_short_stacks_get_several_training_slices():
    viewer = ViewerModel()
    a = AnnotationController(viewer)
    for n in (6, 10, 17):
        a.set_image(viewer.add_image(np.random.default_rng(n).random((n, 16, 16)), name=f"s{n}"))
        assert len(a.split.train) >= MIN_TRAINING_SLICES, n
        assert len(a.split.val) == 1
        assert a.sampling.fraction == pytest.approx(0.10)  # the user's setting stays


def test_frozen_heap_nests_and_gives_the_objects_back():
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 0  # the objects that existed are out of the collector's reach
        with frozen_heap():  # a second run overlapping the first
            pass
        assert gc.get_freeze_count() == frozen  # still frozen: the first run goes on
    assert gc.get_freeze_count() == 0


def test_a_run_trains_on_a_frozen_heap_and_saves_in_its_worker(controllers, monkeypatch):
    _, a, t, _ = controllers
    reference = pipeline.load_sample().labels
    a.new_labels_layer(pipeline.load_sample().classes)
    for z in a.planned:
        a.labels.data[z] = reference[z]
        a.mark(int(z))
    tiny(t, epochs=1)
    frozen_while_training: list[int] = []
    t.progress.connect(lambda event: frozen_while_training.append(gc.get_freeze_count()))
    saved_in: list[str] = []
    workspace = type(a.workspace)
    original = workspace.save_checkpoint

    def save(self, checkpoint):
        saved_in.append(threading.current_thread().name)
        return original(self, checkpoint)

    monkeypatch.setattr(workspace, "save_checkpoint", save)
    thread = t.start()
    thread.join(120)
    assert t.state is TrainState.DONE
    assert frozen_while_training and min(frozen_while_training) > 0
    assert gc.get_freeze_count() == 0  # given back when the run ended
    assert saved_in == [thread.name]  # the checkpoint file is written off the GUI thread
    assert a.workspace.load_checkpoint().epochs_done == 1


def test_a_checkpoint_that_cannot_be_saved_is_reported_and_kept(controllers, monkeypatch):
    _, a, t, _ = controllers
    reference = pipeline.load_sample().labels
    a.new_labels_layer(pipeline.load_sample().classes)
    for z in a.planned:
        a.labels.data[z] = reference[z]
        a.mark(int(z))
    tiny(t, epochs=1)
    reported: list[BaseException] = []
    monkeypatch.setattr(training_module, "report", reported.append)

    full = NumsnetError("The disk is full.", "Free some space.")

    def refuse(self, checkpoint):
        raise full

    monkeypatch.setattr(type(a.workspace), "save_checkpoint", refuse)
    t.start().join(120)
    assert t.state is TrainState.DONE
    assert reported == [full]
    assert t.checkpoint is not None and t.checkpoint.epochs_done == 1  # kept in memory
