"""Slice suggestions: scores, ranking, exclusion, and a model's uncertain slice first."""

from __future__ import annotations

import numpy as np
import pytest

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PredictConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine.suggest import (
    SCORES,
    foreground_area,
    pair_distance,
    predict_with_suggestion,
    rank_slices,
    slice_scores,
    suggest_from_probabilities,
    voxel_uncertainty,
)
from napari_numsnet.errors import NumsnetError
from toys import square_images

#: Filters per depth of the tiny test models (as in conftest.py).
TINY_WIDTHS = (4, 8, 8, 8, 8)


def confident_stack(z: int = 8, c: int = 3, size: int = 16, uncertain: int = 5) -> np.ndarray:
    """``(C, Z, H, W)`` softmax probabilities: confident squares, one slice at 50/50."""
    prob = np.zeros((c, z, size, size), dtype=np.float32)
    prob[0] = 0.98
    prob[1:] = 0.02 / (c - 1)
    for k in range(z):
        cls = 1 + k % (c - 1)
        prob[:, k, 4:12, 4:12] = 0.02 / (c - 1)
        prob[cls, k, 4:12, 4:12] = 0.98
        prob[0, k, 4:12, 4:12] = 1.0 - prob[1:, k, 4:12, 4:12].sum(axis=0)
    # The square of one slice: as likely background as foreground.
    prob[:, uncertain, 4:12, 4:12] = 0.0
    prob[0, uncertain, 4:12, 4:12] = 0.5
    prob[1, uncertain, 4:12, 4:12] = 0.5
    return prob


@pytest.mark.parametrize("kind", ["entropy", "margin"])
@pytest.mark.parametrize("weighting", ["foreground", "sum"])
def test_uncertain_slice_ranks_first(kind: str, weighting: str) -> None:
    prob = confident_stack(uncertain=5)
    suggestion = suggest_from_probabilities(prob, kind=kind, weighting=weighting)
    assert suggestion.ranking[0] == 5
    assert sorted(suggestion.top()) == list(range(8))
    assert suggestion.method == f"{kind}/{weighting}"
    assert suggestion.scores.shape == (8,)


def test_excluded_slices_never_appear() -> None:
    prob = confident_stack(uncertain=5)
    suggestion = suggest_from_probabilities(prob, exclude=[5, 0, 7])
    assert 5 not in suggestion.ranking and 0 not in suggestion.ranking
    assert 7 not in suggestion.ranking
    assert len(suggestion.ranking) == 5
    assert np.isnan(suggestion.scores[[0, 5, 7]]).all()
    assert np.isfinite(suggestion.scores[[1, 2, 3, 4, 6]]).all()
    with pytest.raises(NumsnetError, match="outside the stack"):
        suggest_from_probabilities(prob, exclude=[8])


def test_every_slice_excluded_gives_an_empty_ranking() -> None:
    prob = confident_stack(z=3, uncertain=1)
    assert suggest_from_probabilities(prob, exclude=[0, 1, 2]).top() == []


def test_uncertainty_range_and_units() -> None:
    prob = confident_stack()
    for kind in ("entropy", "margin"):
        u = voxel_uncertainty(prob, kind)
        assert u.shape == prob.shape[1:] and u.dtype == np.float32
        assert u.min() >= 0.0 and u.max() <= 1.0
    # Uniform probabilities over C classes: entropy 1 (normalised by log C), margin 1.
    uniform = np.full((4, 1, 2, 2), 0.25, dtype=np.float32)
    assert np.allclose(voxel_uncertainty(uniform, "entropy"), 1.0)
    assert np.allclose(voxel_uncertainty(uniform, "margin"), 1.0)
    onehot = np.zeros((4, 1, 2, 2), dtype=np.float32)
    onehot[2] = 1.0
    assert np.allclose(voxel_uncertainty(onehot, "entropy"), 0.0, atol=1e-5)
    assert np.allclose(voxel_uncertainty(onehot, "margin"), 0.0)
    # Independent planes: p = 0.5 is the most uncertain, 0 or 1 certain.
    planes = np.array([0.5, 0.0, 1.0], dtype=np.float32).reshape(1, 1, 1, 3)
    assert np.allclose(
        voxel_uncertainty(planes, "entropy", exclusive=False)[0, 0], [1, 0, 0], atol=1e-6
    )
    assert np.allclose(voxel_uncertainty(planes, "margin", exclusive=False)[0, 0], [1, 0, 0])
    with pytest.raises(NumsnetError, match="Unknown uncertainty"):
        voxel_uncertainty(prob, "variance")
    with pytest.raises(NumsnetError, match=r"\(C, Z, H, W\)"):
        voxel_uncertainty(prob[0])


def test_foreground_weighting_is_a_fraction_and_an_empty_slice_scores_zero() -> None:
    prob = confident_stack(uncertain=5)
    prob[:, 2] = 0.0
    prob[0, 2] = 1.0  # slice 2: confidently empty
    u = voxel_uncertainty(prob, "entropy")
    scores = slice_scores(u, prob, weighting="foreground")
    assert scores[2] == pytest.approx(0.0, abs=1e-6)
    assert ((scores >= 0.0) & (scores <= 1.0)).all()
    area = foreground_area(prob)
    assert area[2] == pytest.approx(0.0, abs=1e-6)
    assert area[1] == pytest.approx(64 * 0.99 + (256 - 64) * 0.02, rel=1e-4)  # voxels
    totals = slice_scores(u, prob, weighting="sum")
    assert totals[5] == pytest.approx(float(u[5].sum()), rel=1e-6)
    with pytest.raises(NumsnetError, match="weighting"):
        slice_scores(u, prob, weighting="max")  # type: ignore[arg-type]


def test_pair_scores_rank_the_slice_where_the_passes_disagree() -> None:
    first = confident_stack(uncertain=0)
    first[:, 0] = first[:, 1]  # no 50/50 slice in either pass
    second = first.copy()
    second[:, 3, 4:12, 4:12] = first[:, 3, 4:12, 4:12][[2, 1, 0]]  # slice 3: classes swapped
    for kind in ("disagreement", "tta"):
        suggestion = suggest_from_probabilities(first, kind=kind, second=second)
        assert suggestion.ranking[0] == 3
    d = pair_distance(first, second)
    assert d[3, 8, 8] == pytest.approx(0.97, abs=1e-5) and d[2].max() == 0.0
    with pytest.raises(NumsnetError, match="second prediction"):
        suggest_from_probabilities(first, kind="tta")
    with pytest.raises(NumsnetError, match="Unknown score"):
        suggest_from_probabilities(first, kind="dropout")


def test_rank_ties_keep_slice_order_and_nan_last() -> None:
    suggestion = rank_slices(np.array([0.2, np.nan, 0.5, 0.2, 0.5]))
    assert suggestion.top() == [2, 4, 0, 3, 1]
    assert suggestion.to_dict(top=2) == {
        "method": "",
        "ranking": [{"slice": 2, "score": 0.5}, {"slice": 4, "score": 0.5}],
    }


@pytest.fixture(scope="module")
def trained_squares() -> tuple[pipeline.Checkpoint, np.ndarray]:
    """A tiny UNet trained on bright squares (confident on them) and a test stack."""
    images, labels = square_images(n=8, seed=3)
    stack = pipeline.AnnotatedStack(images, labels, np.arange(8), name="squares")
    checkpoint = pipeline.train(
        stack,
        ModelConfig("unet", num_classes=2, widths=TINY_WIDTHS),
        TrainConfig(
            epochs=25, batch_size=4, learning_rate=1e-2, augment=False, amp=False, device="cpu"
        ),
        PreprocessConfig(size=32),
    )
    test_images, _ = square_images(n=6, seed=11)
    return checkpoint, test_images


def test_a_model_ranks_the_slice_made_ambiguous_first(trained_squares) -> None:
    checkpoint, original = trained_squares
    images = original.copy()
    # Slice 4: the square at half the contrast the model learnt, half-way to background.
    square = images[4] > 0.6
    images[4][square] -= 0.5
    model = checkpoint.build_model()
    config = PredictConfig(device="cpu")
    for kind in ("entropy", "margin", "tta"):
        prediction, suggestion = predict_with_suggestion(
            model, images, checkpoint.preprocess, annotated=[0], kind=kind, config=config
        )
        _, before = predict_with_suggestion(
            model, original, checkpoint.preprocess, annotated=[0], kind=kind, config=config
        )
        assert prediction.probabilities is not None
        assert prediction.probabilities.shape == (2, *images.shape)
        assert 0 not in suggestion.ranking
        assert suggestion.scores[4] > before.scores[4], (kind, suggestion.scores, before.scores)
        if kind == "tta":
            # The flip disagreement of a tiny model trained without augmentation also
            # depends on where its squares lie: the slice is among the first two.
            assert 4 in suggestion.ranking[:2], (kind, suggestion.scores)
        else:
            assert suggestion.ranking[0] == 4, (kind, suggestion.scores)
            assert suggestion.scores[4] > 1.5 * before.scores[4], (kind, suggestion.scores)


def test_disagreement_of_a_sequential_model_has_both_directions(tiny_config) -> None:
    images, labels = square_images(n=5, seed=2)
    checkpoint = pipeline.train(
        pipeline.AnnotatedStack(images, labels, [1, 3]),
        tiny_config("numsnet"),
        TrainConfig(epochs=1, batch_size=2, augment=False, amp=False, device="cpu"),
        PreprocessConfig(size=32),
    )
    model = checkpoint.build_model()
    prediction, suggestion = predict_with_suggestion(
        model, images, checkpoint.preprocess, [1, 3], "disagreement", config=PredictConfig()
    )
    both = pipeline.predict(
        checkpoint, images, PredictConfig(direction="both"), probabilities=True
    )
    assert both.probabilities is not None and prediction.probabilities is not None
    assert np.allclose(prediction.probabilities, both.probabilities, atol=1e-5)
    assert sorted(suggestion.top()) == [0, 2, 4]
    assert "disagreement" in SCORES


def test_cli_prints_the_ranking_as_a_table_and_as_json(trained_squares, tmp_path, capsys) -> None:
    import json

    from napari_numsnet.cli import main
    from napari_numsnet.engine.checkpoint import save_checkpoint

    checkpoint, images = trained_squares
    images = images.copy()
    images[4][images[4] > 0.6] -= 0.5  # the ambiguous slice
    image_path, ckpt = tmp_path / "squares.npy", tmp_path / "model.numsnet.pt"
    np.save(image_path, images)
    save_checkpoint(checkpoint, ckpt)
    base = ["suggest", "--checkpoint", str(ckpt), "--image", str(image_path), "--device", "cpu"]
    assert main([*base, "--annotated", "0,2", "--json", "--top", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "entropy/sum" and out["annotated"] == [0, 2]
    assert out["ranking"][0]["slice"] == 4 and len(out["ranking"]) == 2
    assert main([*base, "--annotated", "1", "--top", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "1 annotated left out" in lines[0] and lines[1].split() == ["rank", "slice", "score"]
    assert int(lines[2].split()[1]) == 4 and len(lines[2:]) == 5
    assert main([*base, "--annotated", "9"]) == 2  # outside the 6 slices
    assert "--annotated names slice(s) 9" in capsys.readouterr().err
