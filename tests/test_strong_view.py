"""UniMatch's strong view for the semi-supervised term: CutMix boxes, colour jitter, the
pseudo-labels pasted with the images, no label of an unannotated slice read, and every
model of the registry either trained with it or refused with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet.config import ModelConfig, TrainConfig
from napari_numsnet.data.augment import colour_jitter, cutmix_boxes
from napari_numsnet.data.dataset import StackSample
from napari_numsnet.engine.semisupervised import cutmix, unimatch_view
from napari_numsnet.engine.trainer import fit
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import MODELS, create_model
from napari_numsnet.models.base import ModelKind
from toys import square_images


def recipe(**changes) -> TrainConfig:
    base = TrainConfig(
        steps=6,
        batch_size=2,
        learning_rate=1e-2,
        augment=True,
        amp=False,
        device="cpu",
        semi_supervised=1.0,
        confidence=0.0,
        strong_view="unimatch",
    )
    return base.replace(**changes)


def stack_of(n: int = 10, annotated=(2, 7), garbage: int | None = None) -> StackSample:
    images, labels = square_images(n, seed=0)
    mask = np.zeros(n, bool)
    mask[list(annotated)] = True
    if garbage is not None:
        labels[~mask] = garbage
    return StackSample(images, labels, mask, "stack")


def test_cutmix_boxes_are_rectangles_of_the_drawn_area():
    boxes = cutmix_boxes(200, 64, 48, torch.Generator().manual_seed(0), probability=1.0)
    assert boxes.shape == (200, 64, 48) and boxes.dtype == torch.bool
    areas = boxes.float().mean(dim=(1, 2))
    assert bool((areas > 0).all())
    assert float(areas.max()) <= 0.4 + 1e-6
    for box in boxes[:20]:
        rows, cols = box.any(dim=1), box.any(dim=0)
        assert int(box.sum()) == int(rows.sum()) * int(cols.sum())  # one filled rectangle
    never = cutmix_boxes(50, 16, 16, torch.Generator().manual_seed(0), probability=0.0)
    assert not bool(never.any())
    some = cutmix_boxes(400, 16, 16, torch.Generator().manual_seed(1), probability=0.5)
    share = float(some.any(dim=(1, 2)).float().mean())
    assert 0.4 < share < 0.6


def test_colour_jitter_scales_about_the_mean_and_is_off_at_probability_zero():
    images = torch.rand(64, 1, 16, 16)
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(colour_jitter(images, generator, probability=0.0), images)
    assert torch.allclose(colour_jitter(images, generator, strength=0.0), images)
    jittered = colour_jitter(images, torch.Generator().manual_seed(0), probability=1.0)
    ratio = jittered.std(dim=(1, 2, 3)) / images.std(dim=(1, 2, 3))
    assert float(ratio.min()) >= 0.25 - 1e-4 and float(ratio.max()) <= 2.25 + 1e-4
    assert float((ratio - 1).abs().max()) > 0.2


def test_pasted_pseudo_labels_follow_the_pasted_images():
    n, size = 6, 32
    # slice i is the constant 10 * (i + 1): the source of every pixel can be read back
    images = (10.0 * torch.arange(1, n + 1)).view(n, 1, 1, 1).expand(n, 1, size, size)
    pseudo = torch.arange(n).view(n, 1, 1).expand(n, size, size).clone()
    keep = torch.zeros(n, size, size, dtype=torch.bool)
    keep[1::2] = True  # odd slices are confident, even ones not
    mixed_total = 0
    for seed in range(5):
        out, labels, mask = unimatch_view(
            images.clone(), pseudo, keep, torch.Generator().manual_seed(seed)
        )
        for i in range(n):
            pasted = labels[i] != i
            source = (i + 1) % n
            assert bool((labels[i][pasted] == source).all())  # only the next slice's labels
            assert bool((mask[i][pasted] == keep[source][pasted]).all())
            assert bool((mask[i][~pasted] == keep[i][~pasted]).all())
            if bool(pasted.any()):  # pasted images and labels coincide pixel for pixel
                inside = out[i, 0][pasted]
                assert float(inside.std()) < 1e-3
                own = out[source, 0][labels[source] == source]  # the source, jittered
                if own.numel():
                    assert float(inside.mean()) == pytest.approx(float(own.mean()), rel=1e-4)
            mixed_total += int(pasted.any())
    assert mixed_total > 0


@pytest.mark.parametrize("view", ["unimatch", "cutmix"])
def test_the_term_never_reads_unannotated_labels(tiny_config, view):
    weights = []
    for garbage in (0, 1):
        torch.manual_seed(0)
        net = create_model(tiny_config("unet"))
        config = recipe(strong_view=view)
        weights.append(fit(net, [stack_of(garbage=garbage)], config).model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_each_strong_view_takes_effect(tiny_config):
    trained = {}
    for view in ("intensity", "unimatch", "cutmix"):
        torch.manual_seed(0)
        net = create_model(tiny_config("unet"))
        trained[view] = fit(net, [stack_of()], recipe(strong_view=view)).model.state_dict()
    for a, b in (("intensity", "unimatch"), ("intensity", "cutmix"), ("unimatch", "cutmix")):
        assert not all(torch.equal(trained[a][k], trained[b][k]) for k in trained[a])


def test_cutmix_alone_pastes_boxes_without_changing_intensities():
    n, size = 6, 32
    images = (10.0 * torch.arange(1, n + 1)).view(n, 1, 1, 1).expand(n, 1, size, size).clone()
    pseudo = torch.arange(n).view(n, 1, 1).expand(n, size, size).clone()
    keep = torch.ones(n, size, size, dtype=torch.bool)
    out, labels, _ = cutmix(images, pseudo, keep, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= set((10.0 * torch.arange(1, n + 1)).tolist())
    for i in range(n):  # every pixel is its own slice's or the next one's, labels alike
        assert bool((out[i, 0] == 10.0 * (labels[i] + 1)).all())


def test_an_unknown_strong_view_is_refused(tiny_config):
    net = create_model(tiny_config("unet"))
    with pytest.raises(NumsnetError, match="strong view"):
        fit(net, [stack_of()], recipe(strong_view="mixup"))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registry_model_trains_with_the_strong_view_or_is_refused(name):
    """Slice models with exclusive classes train with it (tiny widths, augmentation on);
    the others get the error that says why."""
    torch.manual_seed(0)
    net = create_model(ModelConfig(name, num_classes=2, widths=(4, 4, 8, 8, 8)))
    config = recipe(steps=2)
    if net.kind is not ModelKind.SLICE or not net.config.exclusive:
        with pytest.raises(NumsnetError, match="slice models"):
            fit(net, [stack_of()], config)
        return
    before = {k: v.clone() for k, v in net.state_dict().items()}
    after = fit(net, [stack_of()], config).model.state_dict()
    floating = [k for k, v in after.items() if v.dtype.is_floating_point]
    assert all(torch.isfinite(after[k]).all() for k in floating)
    assert not all(torch.equal(before[k], after[k]) for k in floating)
