"""Training on random patches of the augmented slices (``TrainConfig.patch_size``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet.config import ModelConfig, TrainConfig
from napari_numsnet.data import random_affine, random_affine_patch
from napari_numsnet.data.dataset import StackSample
from napari_numsnet.engine import semisupervised
from napari_numsnet.engine.trainer import fit
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import MODELS, create_model
from napari_numsnet.models.base import ModelKind
from toys import square_images

STILL = {"rotation": 0.0, "shift": 0.0, "shear": 0.0, "zoom": (1.0, 1.0)}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ramp(batch: int = 3, height: int = 32, width: int = 40) -> torch.Tensor:
    """``x + 100 y`` in pixels: a patch at the slice's own scale keeps steps of 1 and 100."""
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    return (x + 100 * y).expand(batch, 1, height, width).clone()


def test_a_patch_is_cut_at_the_slices_scale_inside_the_slice():
    images = _ramp()
    labels = torch.zeros(3, 32, 40, dtype=torch.long)
    out, out_labels = random_affine(images, labels, _gen(), size=16, **STILL)
    assert out.shape == (3, 1, 16, 16)
    assert out_labels.shape == (3, 16, 16)
    steps_x = out[:, 0, :, 1:] - out[:, 0, :, :-1]
    steps_y = out[:, 0, 1:, :] - out[:, 0, :-1, :]
    assert torch.allclose(steps_x, torch.ones_like(steps_x), atol=1e-3)
    assert torch.allclose(steps_y, torch.full_like(steps_y, 100.0), atol=1e-2)
    # Inside the slice: no border repeated, so the corners are real pixels.
    assert float(out.min()) >= 0.0 and float(out.max()) <= 39 + 100 * 31


def test_patches_fall_at_different_places_of_each_slice_or_one_place_for_a_run():
    images = _ramp(batch=4)
    labels = torch.zeros(4, 32, 40, dtype=torch.long)
    apart, _ = random_affine(images, labels, _gen(1), size=16, **STILL)
    corners = apart[:, 0, 0, 0]
    assert len(set(torch.round(corners).tolist())) > 1
    together, _ = random_affine(images, labels, _gen(1), size=16, same_for_batch=True, **STILL)
    assert torch.equal(together, together[:1].expand_as(together))


def test_labels_follow_the_patch_and_keep_their_values():
    images = _ramp(batch=2) % 100  # x alone
    labels = (images[:, 0] % 7).to(torch.long)  # labels 0..6 read from the same column
    out, out_labels = random_affine(images, labels, _gen(2), size=16, **STILL)
    assert torch.equal(out_labels, torch.round(out[:, 0]).to(torch.long) % 7)
    _, moved = random_affine(images, labels, _gen(3), size=16, rotation=0.5, zoom=(0.7, 1.4))
    assert set(moved.unique().tolist()) <= set(labels.unique().tolist())


def test_no_patch_draws_as_before_and_a_side_as_large_as_the_slice_is_no_patch():
    images = torch.rand(3, 1, 32, 32, generator=_gen(4))
    labels = torch.randint(0, 3, (3, 32, 32), generator=_gen(5))
    plain = random_affine(images, labels, _gen(6))
    for size in (0, 32, 48):
        again = random_affine(images, labels, _gen(6), size=size)
        assert all(torch.equal(a, b) for a, b in zip(plain, again, strict=True))


def test_a_slice_wholly_in_or_out_of_the_loss_stays_so_in_its_patch():
    images = torch.rand(4, 1, 32, 32, generator=_gen(7))
    labels = torch.randint(0, 3, (4, 32, 32), generator=_gen(8))
    mask = torch.tensor([True, False, True, False])[:, None, None].expand(4, 32, 32)
    _, _, out_mask = random_affine_patch(
        images, labels, mask, _gen(9), same_for_batch=True, rotation=0.5, size=16
    )
    assert out_mask is not None and out_mask.shape == (4, 16, 16)
    assert out_mask[0].all() and out_mask[2].all()
    assert not out_mask[1].any() and not out_mask[3].any()
    assert random_affine_patch(images, labels, None, _gen(9), size=16)[2] is None


def _stack(n: int = 12, size: int = 64) -> StackSample:
    images, labels = square_images(n, size=size, seed=0, side=20)
    annotated = np.zeros(n, bool)
    annotated[[2, 6, 9]] = True
    return StackSample(images, labels, annotated, "stack")


def _recipe(**changes) -> TrainConfig:
    base = TrainConfig(
        steps=2, batch_size=2, learning_rate=1e-2, augment=True, amp=False, device="cpu"
    )
    return base.replace(**changes)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_on_patches_and_validates_on_whole_slices(name):
    """Slice and sequence models see patches in training and whole slices in validation;
    3D sub-volumes keep their size."""
    net = create_model(ModelConfig(name, num_classes=2, widths=(4, 4, 8, 8, 8)))
    sides: list[tuple[bool, int]] = []
    net.register_forward_pre_hook(
        lambda module, args: sides.append((module.training, args[0].shape[-1]))
    )
    val = _stack(12)
    fit(net, [_stack()], _recipe(patch_size=32, val_every=2), val_stacks=[val])
    trained = {side for training, side in sides if training}
    validated = {side for training, side in sides if not training}
    if net.kind is ModelKind.VOLUME:
        assert trained == {64}
    else:
        assert trained == {32}
    assert validated == {64}


def test_without_augmentation_there_is_no_patch():
    net = create_model(ModelConfig("drsegunet", num_classes=2, widths=(4, 4, 8, 8, 8)))
    sides: list[int] = []
    net.register_forward_pre_hook(lambda module, args: sides.append(args[0].shape[-1]))
    fit(net, [_stack()], _recipe(patch_size=32, augment=False))
    assert set(sides) == {64}


def test_the_semi_supervised_term_sees_patches_of_the_unannotated_slices(monkeypatch):
    shapes: list[tuple[int, ...]] = []
    real = semisupervised.random_affine

    def spy(images, labels, generator, **kwargs):
        out = real(images, labels, generator, **kwargs)
        shapes.append(tuple(out[0].shape))
        return out

    monkeypatch.setattr(semisupervised, "random_affine", spy)
    net = create_model(ModelConfig("drsegunet", num_classes=2, widths=(4, 4, 8, 8, 8)))
    config = _recipe(
        steps=10,
        patch_size=32,
        semi_supervised=1.0,
        semi_supervised_min_slices=1,
        strong_view="unimatch",
    )
    fit(net, [_stack()], config)
    assert shapes and {shape[-2:] for shape in shapes} == {(32, 32)}


def test_patch_sizes_a_model_cannot_take_are_refused():
    net = create_model(ModelConfig("drsegunet", num_classes=2, widths=(4, 4, 8, 8, 8)))
    with pytest.raises(NumsnetError, match="multiple of 16") as error:
        fit(net, [_stack()], _recipe(patch_size=40))
    assert "32 or 48" in error.value.fix
    with pytest.raises(NumsnetError, match="Patch size -16"):
        fit(net, [_stack()], _recipe(patch_size=-16))
