"""k-means pseudo-labels (DRSegUNet thesis 4.4.1): each step on a phantom, then real data."""

from __future__ import annotations

import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_numsnet.errors import NumsnetError
from napari_numsnet.pseudolabel import (
    KMeansConfig,
    PseudoLabelResult,
    body_mask,
    clean_labels,
    kmeans_pseudolabels,
    line_element,
    looks_like_hounsfield,
    lung_mask,
)

ROOT = Path(__file__).parents[1]
SAMPLE = ROOT / "src" / "napari_numsnet" / "sample_data"
DATA = ROOT / ".." / "shared" / "data"

Z, N = 6, 96
AIR, TISSUE, LUNG, OPACITY = -1000.0, 40.0, -850.0, -400.0


def _ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    r, c = np.mgrid[:N, :N]
    return ((r - cy) / ry) ** 2 + ((c - cx) / rx) ** 2 <= 1.0


def _phantom(lungs: bool = True, bubble: bool = True, seed: int = 0):
    """A (Z, 96, 96) chest-like stack in HU and its parts (2D masks, the same on every slice).

    Soft tissue body in air; a large left lung with an opacity and a vessel; a small right
    lung (as at the lung bases) with a vessel; a gas bubble in the lower body that is larger
    than the right lung, so that "the two largest air regions" would take it.
    """
    parts = {
        "body": _ellipse(48, 48, 36, 44),
        "left": _ellipse(42, 27, 22, 13),
        "right": _ellipse(40, 69, 10, 7),
        "opacity": _ellipse(34, 27, 8, 8),
        "vessels": _ellipse(52, 27, 2, 2) | _ellipse(40, 69, 2, 2),
        "bubble": _ellipse(72, 48, 9, 9),
    }
    img = np.where(parts["body"], TISSUE, AIR)
    if lungs:
        img[parts["left"] | parts["right"]] = LUNG
        img[parts["opacity"]] = OPACITY
        img[parts["vessels"]] = TISSUE
    if bubble:
        img[parts["bubble"]] = AIR
    noise = np.random.default_rng(seed).normal(0.0, 10.0, (Z, N, N))
    return (img[None] + noise).astype(np.float32), parts


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _stack(mask2d: np.ndarray) -> np.ndarray:
    return np.broadcast_to(mask2d, (Z, N, N))


# ---------------------------------------------------------------- steps on the phantom


def test_phantom_air_body_and_lungs():
    stack, p = _phantom()
    lung, body, air = lung_mask(stack)
    assert lung.shape == body.shape == air.shape == stack.shape
    expected_air = ~p["body"] | ((p["left"] | p["right"]) & ~p["vessels"]) | p["bubble"]
    np.testing.assert_array_equal(air, _stack(expected_air))
    np.testing.assert_array_equal(body, _stack(p["body"]))
    lungs = _stack(p["left"] | p["right"])
    assert _dice(lung, lungs) > 0.95
    assert not (lung & _stack(p["bubble"])).any()
    # the vessels and the opacity inside the lungs are part of them (holes filled)
    assert lung[_stack(p["vessels"] | p["opacity"])].all()


def test_naive_two_largest_would_take_the_bubble():
    """The phantom is built so that the thesis' literal rule fails: it is a real test."""
    stack, p = _phantom()
    air = stack < -170
    lab, _ = ndi.label(air & body_mask(air))
    sizes = np.bincount(lab.ravel())[1:]
    naive = np.isin(lab, np.argsort(-sizes)[:2] + 1)
    assert (naive & _stack(p["bubble"])).any()


def test_kmeans_classes_ordered_and_opacity_brighter():
    stack, p = _phantom()
    res = kmeans_pseudolabels(stack)
    assert isinstance(res, PseudoLabelResult)
    assert res.hounsfield and res.labels.dtype == np.uint8
    assert res.centers.shape == (3,) and np.all(np.diff(res.centers) > 0)
    np.testing.assert_allclose(res.centers, [LUNG, OPACITY, TISSUE], atol=30.0)
    raw = res.raw_labels
    assert (raw[~res.lung_mask] == 0).all() and (raw[res.lung_mask] > 0).all()
    normal = _stack((p["left"] | p["right"]) & ~p["opacity"] & ~p["vessels"])
    assert (raw[normal] == 1).all()
    assert (raw[_stack(p["opacity"])] == 2).all()
    assert (raw[_stack(p["vessels"])] == 3).all()
    # clean-up: the opacity (radius 8) survives, the vessels (radius 2) do not
    labels = res.labels
    assert (labels[~res.lung_mask] == 0).all() and (labels[res.lung_mask] > 0).all()
    assert (labels[_stack(p["opacity"])] == 2).mean() > 0.9
    assert (labels[_stack(p["vessels"])] == 1).all()
    masked = res.masked_image()
    assert (masked[~res.lung_mask] == res.window[0]).all()
    assert res.window == (-1000.0, 400.0) and res.threshold == -170.0


def test_kmeans_is_deterministic():
    stack, _ = _phantom()
    a, b = kmeans_pseudolabels(stack), kmeans_pseudolabels(stack)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centers, b.centers)


def test_line_element_matches_hand_drawn():
    # length 8 at 50 degrees: ends at round(3.5 cos 50) = 2 columns, round(3.5 sin 50) = 3 rows
    expected = np.zeros((7, 5), dtype=bool)
    for row, col in enumerate([4, 3, 3, 2, 1, 1, 0]):
        expected[row, col] = True
    element = line_element(8, 50)
    np.testing.assert_array_equal(element, expected)
    rows, cols = np.nonzero(element)
    angle = math.degrees(math.atan2(rows[-1] - rows[0], cols[0] - cols[-1]))
    assert abs(angle - 50.0) < 7.0
    assert abs(math.hypot(rows[-1] - rows[0], cols[0] - cols[-1]) + 1 - 8) < 1.5
    np.testing.assert_array_equal(line_element(9, 0), np.ones((1, 9), dtype=bool))
    np.testing.assert_array_equal(line_element(5, 90), np.ones((5, 1), dtype=bool))


def test_cleanup_removes_speck_and_keeps_blob():
    lung2d = _ellipse(48, 48, 30, 30)
    raw = np.where(lung2d, 1, 0).astype(np.uint8)
    raw[48, 30] = 2  # a one-pixel speck of class 2
    blob = _ellipse(48, 60, 7, 7)
    raw[blob] = 3
    cleaned = clean_labels(raw[None], lung2d[None])[0]
    assert cleaned[48, 30] == 1
    assert (cleaned[~lung2d] == 0).all() and (cleaned[lung2d] > 0).all()
    assert (cleaned[blob] == 3).mean() > 0.9
    assert (cleaned[lung2d & ~blob] == 1).mean() > 0.98


def test_mask_argument_replaces_lung_search():
    stack, p = _phantom()
    region = _stack(p["left"]).copy()
    res = kmeans_pseudolabels(stack, mask=region)
    np.testing.assert_array_equal(res.lung_mask, region)
    assert (res.labels[~region] == 0).all() and (res.labels[region] > 0).all()
    assert any("mask" in n for n in res.notes)


# ---------------------------------------------------------------- data that is not HU


def test_looks_like_hounsfield():
    stack, _ = _phantom()
    assert looks_like_hounsfield(stack)
    assert not looks_like_hounsfield((stack - stack.min()) / np.ptp(stack))
    assert not looks_like_hounsfield(np.linspace(0, 255, 100).astype(np.uint8))
    assert not looks_like_hounsfield(np.random.default_rng(0).normal(0, 1, 100))


def test_non_hu_falls_back_to_percentiles():
    stack, p = _phantom()
    scaled = (stack - stack.min()) / np.ptp(stack)
    with pytest.warns(UserWarning, match="Hounsfield"):
        res = kmeans_pseudolabels(scaled)
    assert not res.hounsfield
    assert any("Hounsfield" in n and "percentile" in n for n in res.notes)
    assert 0.0 <= res.window[0] < res.threshold < res.window[1] <= 1.0
    assert _dice(res.lung_mask, _stack(p["left"] | p["right"])) > 0.95
    assert not (res.lung_mask & _stack(p["bubble"])).any()
    assert (res.raw_labels[_stack(p["opacity"])] == 2).all()


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("stack", "words"),
    [
        (np.zeros((8, 8)), "stack[None]"),
        (np.zeros((2, 2, 8, 8)), "(Z, H, W)"),
        (np.full((2, 8, 8), np.nan), "NaN"),
        (np.full((2, 8, 8), -1000.0), "one value"),
    ],
)
def test_bad_stacks(stack, words):
    with pytest.raises(NumsnetError, match=re.escape(words)):
        kmeans_pseudolabels(stack)


def test_k_below_two():
    with pytest.raises(NumsnetError, match="k from 2"):
        KMeansConfig(k=1)


@pytest.mark.parametrize("bubble", [False, True])
def test_no_lung_found(bubble):
    """A body without lungs, with or without bowel gas, is not taken for a chest."""
    stack, _ = _phantom(lungs=False, bubble=bubble)
    with pytest.raises(NumsnetError, match=r"may not contain lungs.*mask="):
        kmeans_pseudolabels(stack)
    with pytest.raises(NumsnetError, match="No lungs"):
        lung_mask(stack)


def test_bad_masks():
    stack, _ = _phantom()
    with pytest.raises(NumsnetError, match="shape"):
        kmeans_pseudolabels(stack, mask=np.ones((Z, N, N - 1), bool))
    with pytest.raises(NumsnetError, match="empty"):
        kmeans_pseudolabels(stack, mask=np.zeros((Z, N, N), bool))


# ---------------------------------------------------------------- real data


def _load_zyx(path: Path) -> np.ndarray:
    """NIfTI (X, Y, Z) -> (Z, X, Y), slices along the file's last axis."""
    return np.moveaxis(np.asarray(nib.load(str(path)).dataobj), 2, 0)


def test_lungs_of_the_shipped_ct_sample():
    """Lung bases over the upper abdomen: the bowel and stomach gas must not be taken."""
    stack = _load_zyx(SAMPLE / "ct_sample.nii.gz").astype(np.float32)
    reference = _load_zyx(SAMPLE / "ct_sample_labels.nii.gz") == 4
    res = kmeans_pseudolabels(stack)
    lung = res.lung_mask
    with_lung = reference.any(axis=(1, 2))
    dice_slices = _dice(lung[with_lung], reference[with_lung])
    dice_stack = _dice(lung, reference)
    # the thesis' literal rule, slice by slice: the two largest air regions in the body
    naive = np.zeros_like(lung)
    for z, air in enumerate(res.air_mask & res.body_mask):
        lab, _ = ndi.label(air)
        sizes = np.bincount(lab.ravel())[1:]
        naive[z] = ndi.binary_fill_holes(np.isin(lab, np.argsort(-sizes)[:2] + 1))
    naive_slices = _dice(naive[with_lung], reference[with_lung])
    print(
        f"\nlung Dice on the {int(with_lung.sum())} slices with lung: {dice_slices:.3f} "
        f"(whole stack {dice_stack:.3f}); two largest air regions per slice: "
        f"{naive_slices:.3f} ({_dice(naive, reference):.3f})"
    )
    assert dice_slices > 0.85 and dice_stack > 0.85
    assert naive_slices < 0.85
    assert res.hounsfield and np.all(np.diff(res.centers) > 0)
    assert (res.labels[~lung] == 0).all() and (res.labels[lung] > 0).all()
    lobes = DATA / "ct_abdomen" / "example_seg.nii.gz"
    if lobes.exists():  # the lung lobes of the source labels, ids 10-14: the same lungs
        lobe_ref = np.isin(_load_zyx(lobes), [10, 11, 12, 13, 14])
        assert _dice(lung[with_lung], lobe_ref[with_lung]) > 0.85


@pytest.mark.parametrize("name", ["18.jpg", "21.jpg"])
def test_ground_glass_gets_brighter_classes_on_covid_slices(name):
    """8-bit COVID-19 slices with a lung region passed as mask: ground-glass (manual labels)
    lands in brighter k-means classes than the rest of the lungs."""
    from skimage.filters import threshold_otsu
    from skimage.io import imread

    folder = DATA / "covid_medseg100" / "TestingSet" / "MultiClassInfection-Test"
    if not (folder / "Imgs" / name).exists():
        pytest.skip("../shared/data/covid_medseg100 is not available")
    img = imread(folder / "Imgs" / name).astype(np.float32)
    gt = imread(folder / "GT" / name.replace(".jpg", ".png"))
    ggo = (gt[..., 0] > 64) & (gt[..., 1] < 64)
    region = ndi.binary_fill_holes(img < threshold_otsu(img))
    with pytest.warns(UserWarning, match="Hounsfield"):
        res = kmeans_pseudolabels(img[None], mask=region[None])
    ggo, healthy = ggo & region, region & ~(gt.max(axis=-1) > 64)
    for labels in (res.raw_labels[0], res.labels[0]):
        assert labels[ggo].mean() > labels[healthy].mean() + 0.3
