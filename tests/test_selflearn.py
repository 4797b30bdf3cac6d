"""Self-learning on k-means pseudo-labels (DRSegUNet thesis 4.4.2) on a small chest phantom."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from torch import nn

from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.data.dataset import TrainingStack
from napari_numsnet.engine.freezing import freeze_first_layers, weighted_layers
from napari_numsnet.engine.predict import Prediction
from napari_numsnet.engine.trainer import fit
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import MODELS, create_model
from napari_numsnet.pseudolabel import KMeansConfig, kmeans_pseudolabels
from napari_numsnet.workflows import selflearn
from napari_numsnet.workflows.selflearn import (
    LevelResult,
    SelfLearningConfig,
    SelfLearningResult,
    collapse_reason,
    fine_tune_budget,
    self_learning,
)

Z, N = 8, 64
AIR, TISSUE, LUNG, OPACITY = -1000.0, 40.0, -850.0, -400.0
LUNG_SLICES = list(range(1, Z - 1))
KMEANS = KMeansConfig(k=2)
NAMES = ("background", "lung", "ground-glass")
MODEL = ModelConfig("drsegunet", num_classes=3, widths=(4, 8, 8, 8, 8))
PREPROCESS = PreprocessConfig(size=32, window=(-1000.0, 400.0))
TRAINING = TrainConfig(
    epochs=10, batch_size=2, learning_rate=1e-2, device="cpu", amp=False, augment=False
)
FINE_TUNE = SelfLearningConfig(fine_tune_epochs=4)
LEVEL2_STEPS = math.ceil(Z / TRAINING.batch_size) * FINE_TUNE.fine_tune_epochs
LUNG_RADII, OPACITY_RADII = (14, 9), (6, 5)


def _ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    r, c = np.mgrid[:N, :N]
    return ((r - cy) / ry) ** 2 + ((c - cx) / rx) ** 2 <= 1.0


def _phantom(seed: int = 0) -> np.ndarray:
    """(8, 64, 64) HU: a body in air; two lungs with an opacity in the left one on slices
    1..6; slices 0 and 7 are body only."""
    lungs = _ellipse(29, 19, *LUNG_RADII) | _ellipse(29, 45, *LUNG_RADII)
    img = np.full((Z, N, N), AIR)
    img[:, _ellipse(32, 32, 25, 29)] = TISSUE
    for z in LUNG_SLICES:
        img[z, lungs] = LUNG
        img[z, _ellipse(26, 19, *OPACITY_RADII)] = OPACITY
    img += np.random.default_rng(seed).normal(0.0, 10.0, img.shape)
    return img.astype(np.float32)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two shared cores: one thread each avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run():
    """One normal two-level run, with every event, level and level-2 training set seen."""
    stack = _phantom()
    events, seen_levels, fine_tune_data = [], [], []
    original = selflearn.build_training_data

    def spy(stacks, model, preprocess):
        fine_tune_data.append((stacks[0], model, preprocess))
        return original(stacks, model, preprocess)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(selflearn, "build_training_data", spy)
        result = self_learning(
            stack,
            MODEL,
            TRAINING,
            KMEANS,
            FINE_TUNE,
            preprocess=PREPROCESS,
            callback=events.append,
            on_level=seen_levels.append,
        )
    return stack, result, events, seen_levels, fine_tune_data


# ---------------------------------------------------------------- the normal run


def test_level_zero_is_the_kmeans_labels(run):
    stack, result, *_ = run
    assert isinstance(result, SelfLearningResult)
    assert [lv.level for lv in result.levels] == [0, 1, 2]
    reference = kmeans_pseudolabels(stack, KMEANS)
    level0 = result.levels[0]
    np.testing.assert_array_equal(level0.labels, reference.labels)
    assert level0.checkpoint is None and not level0.collapsed
    assert result.classes.names == NAMES
    # default slices: those with lung for level 1, the rest added at level 2
    np.testing.assert_array_equal(result.slices, LUNG_SLICES)
    np.testing.assert_array_equal(result.new_slices, [0, Z - 1])
    # ground-glass share of the lung = opacity area / area of the two lungs
    expected = OPACITY_RADII[0] * OPACITY_RADII[1] / (2 * LUNG_RADII[0] * LUNG_RADII[1])
    assert level0.class_fractions["ground-glass"] == pytest.approx(expected, abs=0.01)
    assert level0.class_fractions["background"] == 0.0
    assert sum(level0.class_fractions.values()) == pytest.approx(1.0)
    assert result.notes[: len(reference.notes)] == reference.notes


def test_levels_predict_the_stack_and_learn_the_pseudolabels(run):
    stack, result, *_ = run
    kmeans = result.levels[0].labels
    for level in result.levels[1:]:
        assert level.labels.shape == stack.shape and level.labels.dtype == np.uint8
        assert set(np.unique(level.labels)) <= {0, 1, 2}
        assert not level.collapsed and level.reason == ""
        for value in (1, 2):
            dice = _dice(level.labels[LUNG_SLICES] == value, kmeans[LUNG_SLICES] == value)
            assert dice > 0.7, (level.level, value, dice)
    assert result.final is result.levels[2]
    assert not result.collapsed and not result.stopped


def test_level_two_trains_on_level_one_predictions_of_all_slices(run):
    _, result, _, _, fine_tune_data = run
    level1, level2 = result.levels[1], result.levels[2]
    assert len(fine_tune_data) == 1
    data, model, preprocess = fine_tune_data[0]
    assert data.labels is level1.labels
    np.testing.assert_array_equal(data.annotated, np.arange(Z))
    assert model == level1.checkpoint.model_config and preprocess == PREPROCESS
    assert level1.checkpoint.record["annotated"]["stack"] == LUNG_SLICES
    assert level2.checkpoint.record["annotated"]["stack"] == list(range(Z))
    assert level2.checkpoint.record["self_learning"]["level"] == 2


def test_level_two_freezes_the_first_two_layers(run):
    _, result, *_ = run
    level1, level2 = result.levels[1], result.levels[2]
    assert level1.frozen == ()
    assert level2.frozen == ("stem.body.0", "stem.body.1")
    before, after = level1.checkpoint.state_dict, level2.checkpoint.state_dict
    frozen = [k for k in before if k.rsplit(".", 1)[0] in level2.frozen]
    # conv weight, bias; BatchNorm weight, bias, running mean, variance, batch count
    assert len(frozen) == 7
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    trained = [n for n, p in create_model(MODEL).named_parameters() if n not in frozen]
    changed = [k for k in trained if not torch.equal(before[k], after[k])]
    assert changed == trained
    # unfrozen BatchNorm layers ran in training mode: their batch counts went up by the
    # level-2 steps (8 slices, batch 2, 4 epochs)
    count = "stem.shortcut.1.num_batches_tracked"
    assert int(after[count]) - int(before[count]) == LEVEL2_STEPS == 16


def test_level_two_fine_tunes_level_one_at_a_hundredth_of_the_rate(run):
    _, result, *_ = run
    level1, level2 = result.levels[1].checkpoint, result.levels[2].checkpoint
    assert level1.train_config.learning_rate == TRAINING.learning_rate
    assert level2.train_config.learning_rate == pytest.approx(
        level1.train_config.learning_rate * 0.01
    )
    groups = level2.optimizer_state["param_groups"]
    assert all(g["lr"] == pytest.approx(1e-4) for g in groups)
    # started from level 1's weights: Adam moves a weight by about lr per step at most
    params = dict(create_model(MODEL).named_parameters())
    drift = max(float((level2.state_dict[k] - level1.state_dict[k]).abs().max()) for k in params)
    assert 0.0 < drift <= 3.2 * LEVEL2_STEPS * 1e-4
    assert level2.record["epochs_done"] == FINE_TUNE.fine_tune_epochs


def test_a_step_budget_gives_level_two_the_steps_level_one_ran():
    """The presets grow the budget with the slices (here 5 a slice): level 1 trains on the
    6 lung slices (30 steps); level 2, on all 8, runs those 30 steps, not 40.

    The budget is what is tested, not the guard: the guard watches only classes above
    49% of the lung, so a small k-means class a short run loses on some CPUs does not
    stop the loop before level 2.
    """
    training = TRAINING.replace(steps=100, steps_per_slice=5, min_steps=1)
    config = SelfLearningConfig(min_class_fraction=0.49)
    result = self_learning(_phantom(), MODEL, training, KMEANS, config, preprocess=PREPROCESS)
    assert len(result.levels) == 3, [lv.reason for lv in result.levels]
    level1, level2 = (lv.checkpoint for lv in result.levels[1:3])
    assert level1.record["steps_done"] == 5 * len(LUNG_SLICES)
    assert len(level2.record["annotated"]["stack"]) == Z
    assert level2.record["steps_done"] == level1.record["steps_done"]
    assert level2.train_config.learning_rate == pytest.approx(training.learning_rate * 0.01)


@pytest.mark.parametrize(
    ("config", "steps", "epochs"),
    [
        (SelfLearningConfig(), 120, 10),  # a step budget: level 1's steps
        (SelfLearningConfig(fine_tune_steps=7), 7, 10),
        (SelfLearningConfig(fine_tune_epochs=3), 0, 3),  # counted in epochs, as asked
    ],
)
def test_fine_tune_budget_of_a_step_run(config, steps, epochs):
    training = TRAINING.replace(steps=6000, steps_per_slice=150, min_steps=400)
    tuned = fine_tune_budget(training, config, level1_steps=120)
    assert (tuned.steps, tuned.epochs) == (steps, epochs)
    assert tuned.steps_per_slice == 0
    assert tuned.learning_rate == pytest.approx(training.learning_rate * 0.01)


def test_fine_tune_budget_of_an_epoch_run_is_the_thesis_epochs():
    assert fine_tune_budget(TRAINING, SelfLearningConfig(), level1_steps=40) == TRAINING.replace(
        learning_rate=TRAINING.learning_rate * 0.01
    )
    tuned = fine_tune_budget(TRAINING, SelfLearningConfig(fine_tune_steps=5), level1_steps=40)
    assert (tuned.steps, tuned.steps_per_slice) == (5, 0)


def test_events_and_levels_are_reported_in_order(run):
    _, result, events, seen_levels, _ = run
    assert seen_levels == result.levels
    starts = [e.message for e in events if e.kind == "start"]
    assert len(starts) == 2
    assert starts[0].startswith("level 1: ") and starts[1].startswith("level 2: ")
    assert all(e.message.startswith("level ") for e in events)


# ---------------------------------------------------------------- the frozen layers

#: The models of the NUMSnet paper and the DRSegUNet thesis, whose first two layers are
#: a convolution and its BatchNorm.
PAPER_MODELS = ["drsegunet", "nums_all", "numsnet", "unet", "unetpp", "wunet"]


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_first_weighted_layers_are_the_first_the_input_meets(name):
    model = create_model(ModelConfig(name, num_classes=3, widths=(4, 4, 4, 4, 4))).eval()
    layers = weighted_layers(model)
    called: list[str] = []
    for layer_name, module in layers:
        module.register_forward_hook(lambda m, i, o, n=layer_name: called.append(n))
    model(torch.zeros(1, 1, 32, 32))
    first, second = layers[0][1], layers[1][1]
    assert called[:2] == [layers[0][0], layers[1][0]]
    assert isinstance(first, nn.Conv2d) and first.in_channels == 1
    assert isinstance(second, nn.BatchNorm2d) and second.num_features == first.out_channels
    expected = (
        ["stem.body.0", "stem.body.1"] if name == "drsegunet" else ["encoders.0.0", "encoders.0.2"]
    )
    assert [layers[0][0], layers[1][0]] == expected


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_freezes_the_layers_the_input_meets_first(name):
    model = create_model(ModelConfig(name, num_classes=3, widths=(4, 4, 4, 4, 4)))
    first = weighted_layers(model)[0][1]
    assert getattr(first, "in_channels", None) == 1
    frozen = freeze_first_layers(model, 2)
    assert all(
        not p.requires_grad for n, p in model.named_parameters() if n.rsplit(".", 1)[0] in frozen
    )


def test_frozen_layers_stay_bit_identical_through_fit_unetpp():
    torch.manual_seed(0)
    model = create_model(ModelConfig("unetpp", num_classes=2, widths=(4, 4, 4, 4, 4)))
    frozen = freeze_first_layers(model, 2)
    assert frozen == ["encoders.0.0", "encoders.0.2"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    assert not model.encoders[0][2].training and model.encoders[0][5].training
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 32, 32)).astype(np.float32)
    labels = (images > 0).astype(np.int64)
    stack = TrainingStack(images, labels, np.arange(4), "toy")
    config = TrainConfig(epochs=1, batch_size=2, device="cpu", amp=False, augment=False)
    trained = fit(model, [stack], config).model.state_dict()
    for key, value in before.items():
        same = torch.equal(value, trained[key])
        if key.startswith(("encoders.0.0.", "encoders.0.2.")):
            assert same, key
        elif key.startswith(("encoders.0.3.", "encoders.0.5.running_")):
            assert not same, key
    assert int(trained["encoders.0.5.num_batches_tracked"]) == 2


def test_freezing_more_layers_than_the_model_has_is_refused():
    model = create_model(ModelConfig("drsegunet", num_classes=2, widths=(4, 4, 4, 4, 4)))
    with pytest.raises(NumsnetError, match="frozen_layers"):
        freeze_first_layers(model, len(weighted_layers(model)) + 1)


# ---------------------------------------------------------------- the collapse guard


def _level(level: int, lung: dict[str, float], whole: dict[str, float]) -> LevelResult:
    return LevelResult(level, np.zeros((1, 1, 1), np.uint8), None, lung, whole)


def test_collapse_reason_by_hand():
    config = SelfLearningConfig(min_class_fraction=0.01, collapse_ratio=0.1)
    ref = _level(
        0,
        {"background": 0.0, "lung": 0.875, "ground-glass": 0.12, "rare": 0.005},
        {"background": 0.85, "lung": 0.13, "ground-glass": 0.018, "rare": 0.002},
    )
    whole = {"background": 0.85, "lung": 0.13, "ground-glass": 0.02, "rare": 0.0}
    # 0.011 < 0.1 * 0.12 = 0.012: collapsed; 0.013 is not
    low = {"background": 0.1, "lung": 0.889, "ground-glass": 0.011, "rare": 0.0}
    assert "ground-glass" in collapse_reason(ref, _level(2, low, whole), config)
    fine = {"background": 0.1, "lung": 0.887, "ground-glass": 0.013, "rare": 0.0}
    assert collapse_reason(ref, _level(2, fine, whole), config) == ""
    # "rare" (0.5% < 1% of the lung) may vanish
    assert "rare" not in collapse_reason(ref, _level(2, low, whole), config)
    # one class over 99% of the slices, where k-means had at most 85%
    flat = {"background": 0.995, "lung": 0.005, "ground-glass": 0.0, "rare": 0.0}
    reason = collapse_reason(ref, _level(1, fine, flat), config)
    assert "background" in reason and "99.5%" in reason
    ref_flat = _level(0, ref.class_fractions, flat)
    assert collapse_reason(ref_flat, _level(1, fine, flat), config) == ""


def test_collapse_keeps_the_previous_level(monkeypatch):
    """Level 1 predicts the k-means labels, level 2 predicts only background."""
    stack = _phantom()
    kmeans_labels = kmeans_pseudolabels(stack, KMEANS).labels
    outputs = iter([kmeans_labels, np.zeros_like(kmeans_labels)])
    monkeypatch.setattr(selflearn, "predict", lambda *a, **k: Prediction(next(outputs)))
    seen: list[LevelResult] = []
    result = self_learning(
        stack,
        MODEL,
        TRAINING.replace(epochs=1),
        KMEANS,
        SelfLearningConfig(levels=3),
        preprocess=PREPROCESS,
        on_level=seen.append,
    )
    assert [lv.level for lv in result.levels] == [0, 1, 2]
    assert [lv.collapsed for lv in result.levels] == [False, False, True]
    assert result.collapsed and result.final is result.levels[1]
    assert "'lung'" in result.levels[2].reason and "0.0%" in result.levels[2].reason
    assert result.levels[2].class_fractions["background"] == 1.0
    assert result.notes[-1].endswith("Kept level 1.")
    assert seen == result.levels


def test_collapsed_level_one_keeps_the_kmeans_labels(monkeypatch):
    stack = _phantom()
    monkeypatch.setattr(
        selflearn,
        "predict",
        lambda ckpt, image, *a, **k: Prediction(np.ones(image.shape, np.uint8)),
    )
    result = self_learning(stack, MODEL, TRAINING.replace(epochs=1), KMEANS, preprocess=PREPROCESS)
    assert len(result.levels) == 2 and result.levels[1].collapsed
    assert "ground-glass" in result.levels[1].reason
    assert result.final.level == 0


# ---------------------------------------------------------------- stop, non-HU, errors


def test_stop_event_stops_during_level_one():
    stop = threading.Event()
    events = []

    def callback(event):
        events.append(event)
        if event.kind == "step":
            stop.set()

    result = self_learning(
        _phantom(),
        MODEL,
        TRAINING,
        KMEANS,
        preprocess=PREPROCESS,
        callback=callback,
        stop_event=stop,
    )
    assert result.stopped and [lv.level for lv in result.levels] == [0]
    assert sum(e.kind == "step" for e in events) == 1
    assert events[-1].kind == "end" and events[-1].message == "level 1: stopped by the user"
    assert "Stopped while training level 1" in result.notes[-1]


def test_stop_event_set_before_trains_nothing():
    stop = threading.Event()
    stop.set()
    events = []
    result = self_learning(
        _phantom(),
        MODEL,
        TRAINING,
        KMEANS,
        preprocess=PREPROCESS,
        callback=events.append,
        stop_event=stop,
    )
    assert result.stopped and len(result.levels) == 1 and events == []


def test_non_hounsfield_stack_passes_the_kmeans_notes():
    stack = _phantom()
    scaled = ((stack - stack.min()) / np.ptp(stack) * 255).astype(np.float32)
    with pytest.warns(UserWarning, match="Hounsfield"):
        result = self_learning(
            scaled,
            MODEL,
            TRAINING.replace(epochs=1),
            KMEANS,
            SelfLearningConfig(levels=1),
            preprocess=PreprocessConfig(size=32),
        )
    assert not result.pseudolabels.hounsfield
    assert any("Hounsfield" in n and "percentile" in n for n in result.notes)
    assert [lv.level for lv in result.levels[:2]] == [0, 1]


def test_bad_inputs_say_what_to_do():
    stack = _phantom()
    with pytest.raises(NumsnetError, match="num_classes = 3"):
        self_learning(stack, MODEL.replace(num_classes=4), TRAINING, KMEANS)
    with pytest.raises(NumsnetError, match="outside the stack"):
        self_learning(stack, MODEL, TRAINING, KMEANS, slices=[2, Z])
    for bad in (
        {"levels": 0},
        {"fine_tune_lr_factor": 0.0},
        {"frozen_layers": -1},
        {"collapse_ratio": 0.0},
        {"fine_tune_epochs": 0},
        {"fine_tune_steps": 0},
        {"fine_tune_steps": 2.5},
        {"fine_tune_steps": 10, "fine_tune_epochs": 2},
    ):
        with pytest.raises(NumsnetError):
            SelfLearningConfig(**bad)
