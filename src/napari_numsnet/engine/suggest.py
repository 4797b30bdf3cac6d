"""Which slice to correct next: a ranking of the slices from a prediction's probabilities.

Every score is per slice and computed from class probabilities the prediction already
has, so it adds no forward pass, except ``tta`` (one more pass on the flipped stack) and
``disagreement`` (the two directions of the NUMSnet family kept apart instead of averaged;
the same cost as predicting with ``direction="both"``).

Per-voxel uncertainty ``u`` in ``[0, 1]``:

- ``entropy``: the class entropy divided by ``log C`` (exclusive classes), or the mean
  binary entropy of the planes (independent classes), in units of ``log 2``;
- ``margin``: ``1 - (p_first - p_second)``, the two most probable classes (exclusive), or
  ``1 - |2 p - 1|`` averaged over the planes (independent);
- ``disagreement``: half the L1 distance between the forward and backward probabilities
  (the total variation distance, exclusive) or the mean absolute plane difference;
- ``tta``: the same distance between the prediction and that of the left-right flipped
  stack flipped back.

A slice's score weighs the uncertainty by the predicted foreground: with ``U`` the sum of
``u`` over the slice and ``F`` the soft foreground area (the sum of ``1 - p_background``,
voxels) and ``s`` 1% of the slice's area (voxels, so that the faint uncertainty of an
empty slice does not make it a fraction near 1), ``weighting="foreground"`` gives
``U / (F + U + s)``, an estimate of one minus the slice's Dice (near 0 on a slice that
is confidently empty), and ``weighting="sum"`` (the default)
gives ``U`` itself (voxels), which favours the slices with the most uncertain voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import nn

from napari_numsnet.config import PredictConfig, PreprocessConfig
from napari_numsnet.engine.predict import Prediction, predict_volume, probabilities_to_labels
from napari_numsnet.errors import NumsnetError

Weighting = Literal["foreground", "sum"]

#: Scores computed from one prediction's probabilities.
PROBABILITY_SCORES = ("entropy", "margin")
#: Scores that need a second set of probabilities (other direction, flipped stack).
PAIR_SCORES = ("disagreement", "tta")
#: Every score :func:`rank_slices` accepts as a method name.
SCORES = PROBABILITY_SCORES + PAIR_SCORES
#: The default score and weighting, chosen on the loop benchmark (``benchmarks/loop.py``,
#: ``benchmarks/README.md``): on ACDC and the CT sample ``entropy/sum`` reached the best
#: Dice after 3-5 corrected slices; ``entropy/foreground`` and ``tta`` did not beat random.
DEFAULT_SCORE = "entropy"
DEFAULT_WEIGHTING: Weighting = "sum"

#: The smoothing area ``s`` of the foreground weighting, as a fraction of a slice's area.
SMOOTH_FRACTION = 0.01
_EPS = 1e-12


@dataclass(frozen=True)
class Suggestion:
    """Slices ranked for correction, most useful first.

    Attributes
    ----------
    ranking
        ``(n,)`` int64 slice indices along the stack axis, highest score first; the
        excluded (annotated) slices are not in it.
    scores
        ``(Z,)`` float64 score of every slice (higher = correct sooner), NaN on the
        excluded slices. ``foreground`` weighting: a fraction in ``[0, 1]``; ``sum``:
        voxels.
    method
        The score and the weighting, e.g. ``"entropy/foreground"``.
    """

    ranking: np.ndarray
    scores: np.ndarray
    method: str

    def top(self, n: int | None = None) -> list[int]:
        """The first ``n`` slices of the ranking (all of them for ``None``)."""
        return [int(i) for i in (self.ranking if n is None else self.ranking[: max(0, n)])]

    def to_dict(self, top: int | None = None) -> dict[str, object]:
        """JSON-ready: method and the ranked slices with their scores."""
        return {
            "method": self.method,
            "ranking": [{"slice": i, "score": float(self.scores[i])} for i in self.top(top)],
        }


def _check_probabilities(prob: np.ndarray, name: str = "probabilities") -> np.ndarray:
    prob = np.asarray(prob)
    if prob.ndim != 4 or prob.shape[0] < 1 or prob.shape[1] < 1:
        raise NumsnetError(
            f"The {name} have shape {prob.shape}; (C, Z, H, W) class probabilities are needed.",
            "Predict with probabilities=True and pass the whole (C, Z, H, W) array.",
        )
    return prob.astype(np.float32, copy=False)


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), _EPS, 1.0 - 1e-9)
    return -(p * np.log2(p) + (1.0 - p) * np.log2(1.0 - p))


def voxel_uncertainty(
    prob: np.ndarray, kind: str = "entropy", exclusive: bool = True
) -> np.ndarray:
    """Per-voxel uncertainty of class probabilities.

    Parameters
    ----------
    prob
        ``(C, Z, H, W)`` float probabilities: softmax channels summing to 1 (``exclusive``)
        or independent sigmoid planes (channel k = label k + 1).
    kind
        ``entropy`` or ``margin`` (see the module docstring).
    exclusive
        Softmax (True) or independent planes (False).

    Returns
    -------
    np.ndarray
        ``(Z, H, W)`` float32 in ``[0, 1]``: 0 = certain, 1 = the most uncertain.
    """
    prob = _check_probabilities(prob)
    c = prob.shape[0]
    if kind == "entropy":
        if not exclusive:
            return _binary_entropy(prob).mean(axis=0).astype(np.float32)
        if c == 1:
            return np.zeros(prob.shape[1:], dtype=np.float32)
        p = np.clip(prob, _EPS, 1.0)
        ent = -(p * np.log(p)).sum(axis=0) / np.log(c)
        return np.clip(ent, 0.0, 1.0).astype(np.float32)
    if kind == "margin":
        if not exclusive:
            return (1.0 - np.abs(2.0 * prob - 1.0)).mean(axis=0).astype(np.float32)
        if c == 1:
            return np.zeros(prob.shape[1:], dtype=np.float32)
        top2 = np.partition(prob, c - 2, axis=0)[c - 2 :]
        return np.clip(1.0 - (top2[1] - top2[0]), 0.0, 1.0).astype(np.float32)
    raise NumsnetError(
        f"Unknown uncertainty {kind!r}.", f"Choose one of: {', '.join(PROBABILITY_SCORES)}."
    )


def pair_distance(first: np.ndarray, second: np.ndarray, exclusive: bool = True) -> np.ndarray:
    """Per-voxel distance between two probability sets of the same stack.

    Parameters
    ----------
    first, second
        ``(C, Z, H, W)`` probabilities of two passes (forward and backward, or plain and
        flipped back).
    exclusive
        Softmax channels (total variation: half the L1 distance) or independent planes
        (mean absolute difference).

    Returns
    -------
    np.ndarray
        ``(Z, H, W)`` float32 in ``[0, 1]``.
    """
    first, second = _check_probabilities(first), _check_probabilities(second, "second set")
    if first.shape != second.shape:
        raise NumsnetError(
            f"The two probability sets differ in shape: {first.shape} and {second.shape}.",
            "Compare two predictions of the same stack.",
        )
    diff = np.abs(first - second)
    out = 0.5 * diff.sum(axis=0) if exclusive else diff.mean(axis=0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def foreground_area(prob: np.ndarray, exclusive: bool = True) -> np.ndarray:
    """Soft predicted foreground per slice, ``(Z,)`` float64 voxels.

    Exclusive classes: the sum of ``1 - p_background`` (channel 0); independent planes:
    the sum of the largest plane probability.
    """
    prob = _check_probabilities(prob)
    fg = (1.0 - prob[0]) if exclusive else prob.max(axis=0)
    return fg.reshape(fg.shape[0], -1).sum(axis=1, dtype=np.float64)


def slice_scores(
    uncertainty: np.ndarray,
    prob: np.ndarray,
    exclusive: bool = True,
    weighting: Weighting = DEFAULT_WEIGHTING,
) -> np.ndarray:
    """Score of every slice from per-voxel uncertainty and the predicted foreground.

    Parameters
    ----------
    uncertainty
        ``(Z, H, W)`` in ``[0, 1]`` (:func:`voxel_uncertainty` or :func:`pair_distance`).
    prob
        ``(C, Z, H, W)`` probabilities of the prediction (for the foreground area).
    exclusive
        Softmax or independent planes.
    weighting
        ``foreground``: ``U / (F + U + s)``, in ``[0, 1)``; ``sum``: ``U`` in voxels.

    Returns
    -------
    np.ndarray
        ``(Z,)`` float64, higher = correct sooner.
    """
    uncertainty = np.asarray(uncertainty)
    prob = _check_probabilities(prob)
    if uncertainty.shape != prob.shape[1:]:
        raise NumsnetError(
            f"Uncertainty {uncertainty.shape} does not match the probabilities {prob.shape}.",
            "Compute both from the same prediction.",
        )
    total = uncertainty.reshape(uncertainty.shape[0], -1).sum(axis=1, dtype=np.float64)
    if weighting == "sum":
        return total
    if weighting == "foreground":
        smooth = SMOOTH_FRACTION * float(np.prod(uncertainty.shape[1:]))
        return total / (foreground_area(prob, exclusive) + total + smooth)
    raise NumsnetError(f"Unknown weighting {weighting!r}.", "Use foreground or sum.")


def rank_slices(
    scores: np.ndarray, exclude: Sequence[int] | np.ndarray = (), method: str = ""
) -> Suggestion:
    """Rank slices by score, leaving out ``exclude`` (the annotated slices).

    Ties keep the lower slice index first; NaN scores rank last.

    Parameters
    ----------
    scores
        ``(Z,)`` per-slice scores.
    exclude
        Slice indices never to suggest (out-of-range indices are refused).
    method
        Recorded in the suggestion.

    Returns
    -------
    Suggestion
    """
    scores = np.asarray(scores, dtype=np.float64).copy()
    if scores.ndim != 1:
        raise NumsnetError(f"Scores have shape {scores.shape}; one per slice is needed.", "")
    z = scores.shape[0]
    excluded = np.unique(np.asarray(list(exclude), dtype=np.int64))
    bad = excluded[(excluded < 0) | (excluded >= z)]
    if bad.size:
        raise NumsnetError(
            f"Annotated slice indices {bad.tolist()} are outside the stack (0..{z - 1}).",
            "Give indices along the stack axis of this stack.",
        )
    scores[excluded] = np.nan
    keep = np.setdiff1d(np.arange(z, dtype=np.int64), excluded)
    key = np.where(np.isnan(scores[keep]), -np.inf, scores[keep])
    order = keep[np.lexsort((keep, -key))]
    return Suggestion(order.astype(np.int64), scores, method)


def suggest_from_probabilities(
    prob: np.ndarray,
    exclude: Sequence[int] | np.ndarray = (),
    exclusive: bool = True,
    kind: str = DEFAULT_SCORE,
    weighting: Weighting = DEFAULT_WEIGHTING,
    second: np.ndarray | None = None,
) -> Suggestion:
    """The ranking of a predicted stack.

    Parameters
    ----------
    prob
        ``(C, Z, H, W)`` probabilities of the prediction (averaged over directions for
        ``disagreement``).
    exclude
        The annotated slices (never suggested).
    exclusive
        Softmax classes or independent planes.
    kind
        ``entropy``, ``margin`` (from ``prob`` alone), ``disagreement`` or ``tta`` (the
        distance between ``prob``'s two passes given as ``prob`` and ``second``).
    weighting
        ``foreground`` or ``sum``.
    second
        ``(C, Z, H, W)``: for ``disagreement`` the backward pass (``prob`` forward), for
        ``tta`` the flipped-back pass.

    Returns
    -------
    Suggestion
    """
    if kind in PROBABILITY_SCORES:
        uncertainty = voxel_uncertainty(prob, kind, exclusive)
        reference = prob
    elif kind in PAIR_SCORES:
        if second is None:
            raise NumsnetError(
                f"The {kind} score needs a second prediction of the stack.",
                "Predict both directions (disagreement) or the flipped stack (tta).",
            )
        uncertainty = pair_distance(prob, second, exclusive)
        reference = 0.5 * (_check_probabilities(prob) + _check_probabilities(second))
    else:
        raise NumsnetError(f"Unknown score {kind!r}.", f"Choose one of: {', '.join(SCORES)}.")
    scores = slice_scores(uncertainty, reference, exclusive, weighting)
    return rank_slices(scores, exclude, f"{kind}/{weighting}")


def predict_with_suggestion(
    model: nn.Module,
    stack: np.ndarray,
    preprocess: PreprocessConfig,
    annotated: Sequence[int] | np.ndarray = (),
    kind: str = DEFAULT_SCORE,
    weighting: Weighting = DEFAULT_WEIGHTING,
    config: PredictConfig = PredictConfig(),
) -> tuple[Prediction, Suggestion]:
    """Predict a raw stack and rank its slices for correction.

    Parameters
    ----------
    model
        A trained registry model.
    stack
        ``(Z, H, W)`` raw intensities.
    preprocess
        The model's preprocessing (from its checkpoint).
    annotated
        Slices already annotated (never suggested).
    kind, weighting
        The score (see :func:`suggest_from_probabilities`). ``disagreement`` predicts
        forward and backward and returns their average (``direction="both"``); for a
        model that is not sequential both passes are the same and every score is 0.
        ``tta`` adds a pass on the left-right flipped stack and returns the plain
        prediction.
    config
        Direction (ignored for ``disagreement``), chunk size, threshold, device.

    Returns
    -------
    tuple[Prediction, Suggestion]
        The prediction with its ``(C, Z, H, W)`` probabilities, and the ranking.
    """
    exclusive = model.config.exclusive
    second = None
    if kind == "disagreement":
        forward = predict_volume(model, stack, preprocess, config.replace(direction="forward"))
        backward = predict_volume(model, stack, preprocess, config.replace(direction="backward"))
        assert forward.probabilities is not None and backward.probabilities is not None
        prob, second = forward.probabilities, backward.probabilities
        mean = 0.5 * (prob + second)
        labels = probabilities_to_labels(mean, exclusive, config.threshold)
        prediction = Prediction(labels, mean)
    else:
        prediction = predict_volume(model, stack, preprocess, config)
        assert prediction.probabilities is not None
        prob = prediction.probabilities
        if kind == "tta":
            flipped = predict_volume(
                model, np.ascontiguousarray(stack[:, :, ::-1]), preprocess, config
            )
            assert flipped.probabilities is not None
            second = np.ascontiguousarray(flipped.probabilities[..., ::-1])
    suggestion = suggest_from_probabilities(prob, annotated, exclusive, kind, weighting, second)
    return prediction, suggestion
