"""Random affine augmentation on torch tensors."""

from __future__ import annotations

import math

import pytest
import torch

from napari_numsnet.data import affine_matrices, random_affine
from napari_numsnet.errors import NumsnetError

H, W = 32, 40


def _batch(b: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 1, H, W, generator=g)
    labels = torch.zeros(b, H, W, dtype=torch.long)
    labels[:, 8:20, 10:30] = 2
    labels[:, 22:28, 5:15] = 5
    return images, labels


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_identity_when_ranges_are_zero():
    images, labels = _batch()
    out_i, out_l = random_affine(
        images, labels, _gen(), rotation=0, shift=0, shear=0, zoom=(1.0, 1.0)
    )
    assert out_l.dtype == torch.long
    assert torch.equal(out_l, labels)
    torch.testing.assert_close(out_i, images, atol=1e-5, rtol=0)


def test_labels_keep_only_present_values_and_change():
    images, labels = _batch()
    _, out_l = random_affine(images, labels, _gen(1))
    assert set(out_l.unique().tolist()) <= {0, 2, 5}
    assert not torch.equal(out_l, labels)


def test_pure_shift_moves_by_a_known_amount():
    # u is drawn as (rotation, shift x, shift y, shear, zoom x, zoom y); with only shift
    # non-zero the map is x_in = x_out + 2 * shift_x in normalised units, i.e.
    # shift_x * W pixels.
    g = _gen(5)
    theta = affine_matrices(1, H, W, g, rotation=0, shift=0.25, shear=0, zoom=(1.0, 1.0))
    u = torch.rand(1, 6, generator=_gen(5))
    expected_tx = 2 * (2 * u[0, 1] - 1) * 0.25
    torch.testing.assert_close(theta[0, :, :2], torch.eye(2))
    torch.testing.assert_close(theta[0, 0, 2], expected_tx)


def test_rotation_stays_a_rotation_on_non_square_slices():
    theta = affine_matrices(8, 20, 60, _gen(2), rotation=0.5, shift=0, shear=0, zoom=(1, 1))
    half = torch.tensor([60 / 2, 20 / 2])
    pixel = theta[:, :, :2] * half.view(2, 1) / half.view(1, 2)  # back to pixel units
    eye = torch.eye(2).expand(8, 2, 2)
    torch.testing.assert_close(pixel @ pixel.transpose(1, 2), eye, atol=1e-6, rtol=0)
    angles = torch.atan2(pixel[:, 1, 0], pixel[:, 0, 0]).abs()
    assert torch.all(angles <= 0.5 + 1e-6) and torch.any(angles > 0.05)
    assert math.isclose(float(torch.linalg.det(pixel[0])), 1.0, rel_tol=1e-5)


def test_same_for_batch_gives_identical_outputs_for_identical_slices():
    images, labels = _batch(1)
    images, labels = images.expand(5, -1, -1, -1).clone(), labels.expand(5, -1, -1).clone()
    out_i, out_l = random_affine(images, labels, _gen(3), same_for_batch=True)
    for k in range(1, 5):
        assert torch.equal(out_i[k], out_i[0])
        assert torch.equal(out_l[k], out_l[0])
    assert not torch.equal(out_l[0], labels[0])


def test_different_slices_differ_without_same_for_batch():
    images, labels = _batch(1)
    images, labels = images.expand(5, -1, -1, -1).clone(), labels.expand(5, -1, -1).clone()
    out_i, out_l = random_affine(images, labels, _gen(3), same_for_batch=False)
    assert not torch.equal(out_i[1], out_i[0])
    assert not torch.equal(out_l[1], out_l[0])


def test_deterministic_under_the_same_seed():
    images, labels = _batch()
    a = random_affine(images, labels, _gen(11))
    b = random_affine(images, labels, _gen(11))
    c = random_affine(images, labels, _gen(12))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_image_border_is_repeated_not_zero():
    images = torch.full((2, 1, H, W), 3.0)
    labels = torch.ones(2, H, W, dtype=torch.long)
    out_i, out_l = random_affine(images, labels, _gen(4), rotation=0.3, shift=0.2)
    torch.testing.assert_close(out_i, images)  # constant image stays constant
    assert (out_l == 0).any()  # labels outside the moved slice become background


def test_shape_errors():
    images, labels = _batch()
    with pytest.raises(NumsnetError, match="do not match"):
        random_affine(images, labels[:, :, :-1], _gen())
    with pytest.raises(NumsnetError, match=r"\(B, C, H, W\)"):
        random_affine(images[:, 0], labels, _gen())
    with pytest.raises(NumsnetError, match="zoom"):
        random_affine(images, labels, _gen(), zoom=(1.0, 0.5))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    images, labels = _batch()
    g = torch.Generator(device="cuda").manual_seed(0)
    out_i, out_l = random_affine(images.cuda(), labels.cuda(), g)
    assert out_i.is_cuda and out_l.is_cuda
    assert set(out_l.unique().tolist()) <= {0, 2, 5}


def test_mirror_flips_about_half_the_axes_after_the_same_draws():
    plain = affine_matrices(400, H, W, _gen(3))
    mirrored = affine_matrices(400, H, W, _gen(3), mirror=True)
    # The flips are drawn after the other parameters: the same maps up to column signs.
    torch.testing.assert_close(mirrored[:, :, :2].abs(), plain[:, :, :2].abs())
    torch.testing.assert_close(mirrored[:, :, 2], plain[:, :, 2])
    flipped = (mirrored[:, :, :2] * plain[:, :, :2]).sum(dim=1) < 0  # (400, 2): x, y
    assert 0.4 < float(flipped.float().mean()) < 0.6
    assert bool(flipped[:, 0].any() & flipped[:, 1].any())


def test_mirror_alone_flips_image_and_labels_together():
    images, labels = _batch(b=16)
    out_i, out_l = random_affine(
        images, labels, _gen(1), rotation=0, shift=0, shear=0, zoom=(1.0, 1.0), mirror=True
    )
    seen = set()
    for k in range(16):
        for axes in [(), (-1,), (-2,), (-2, -1)]:
            image = images[k].flip(axes) if axes else images[k]
            label = labels[k].flip(axes) if axes else labels[k]
            if torch.equal(out_l[k], label) and torch.allclose(out_i[k], image, atol=1e-5):
                seen.add(axes)
                break
        else:
            raise AssertionError(f"slice {k} is not its image flipped along some axes")
    assert len(seen) >= 3  # 16 draws: at least three of the four flips
