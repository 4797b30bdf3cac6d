"""The training recipe: step budgets, schedules, best weights, plateau stop, checkpoints,
batch clamping, batch sources, runs of a stack under augmentation, the semi-supervised term,
intensity augmentation and the spread planner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet.config import ModelConfig, SamplingConfig, TrainConfig
from napari_numsnet.data.augment import random_intensity
from napari_numsnet.data.dataset import StackSample
from napari_numsnet.data.slices import select_slices, spread_indices
from napari_numsnet.engine import step as step_module
from napari_numsnet.engine import trainer as trainer_module
from napari_numsnet.engine.batches import (
    SequenceSource,
    SliceSource,
    SubvolumeSource,
    make_source,
)
from napari_numsnet.engine.schedule import learning_rate_factor
from napari_numsnet.engine.trainer import fit
from napari_numsnet.errors import NumsnetError
from napari_numsnet.models import MODELS, create_model
from napari_numsnet.models.base import ModelKind
from toys import square_images


def recipe(**changes) -> TrainConfig:
    base = TrainConfig(
        steps=6, batch_size=2, learning_rate=1e-2, augment=False, amp=False, device="cpu"
    )
    return base.replace(**changes)


def whole_stack(n: int = 12, annotated=(2, 6, 9), seed: int = 0) -> StackSample:
    images, labels = square_images(n, seed=seed)
    mask = np.zeros(n, bool)
    mask[list(annotated)] = True
    return StackSample(images, labels, mask, "stack")


def model_of(tiny_config, name: str, seed: int = 0, **changes) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(tiny_config(name, **changes))


# --- schedule -----------------------------------------------------------------------


def test_warmup_then_cosine_and_poly_decay_to_near_zero():
    config = TrainConfig(schedule="cosine", warmup_steps=4)
    factors = [learning_rate_factor(s, 20, config) for s in range(20)]
    assert factors[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert factors[4] == pytest.approx(1.0)
    decay = factors[4:]
    assert all(decay[i] >= decay[i + 1] for i in range(len(decay) - 1))
    assert factors[-1] < 0.05
    poly = [learning_rate_factor(s, 20, TrainConfig(schedule="poly")) for s in range(20)]
    assert poly[0] == 1.0 and poly[-1] < 0.1
    assert learning_rate_factor(19, 20, TrainConfig()) == 1.0  # the paper: constant


def test_fit_applies_the_schedule(tiny_config, square_stack):
    config = recipe(steps=8, schedule="cosine", warmup_steps=2, val_every=2)
    result = fit(model_of(tiny_config, "unet"), [square_stack(4)], config)
    rates = [e["lr"] for e in result.record["epochs"]]
    assert len(rates) == 4
    assert rates[0] == pytest.approx(1e-2 * learning_rate_factor(1, 8, config))
    assert rates[1:] == sorted(rates[1:], reverse=True) and rates[-1] < 0.2e-2


# --- step budget and batch size -----------------------------------------------------


@pytest.mark.parametrize("n", [3, 11])
def test_a_step_budget_does_the_same_work_whatever_the_annotation(n, tiny_config, square_stack):
    events: list = []
    result = fit(
        model_of(tiny_config, "unet"), [square_stack(n)], recipe(steps=7), callback=events.append
    )
    assert sum(e.kind == "step" for e in events) == 7
    assert result.record["steps_done"] == 7
    assert result.record["budget"]["steps"] == 7


def test_batch_size_is_clamped_to_the_annotated_slices(tiny_config, square_stack):
    result = fit(model_of(tiny_config, "unet"), [square_stack(3)], recipe(batch_size=5))
    assert result.record["batch_size"] == 3


def test_nothing_to_train_is_refused(tiny_config, square_stack):
    with pytest.raises(NumsnetError, match="Nothing to train"):
        fit(model_of(tiny_config, "unet"), [square_stack(3)], recipe(steps=0, epochs=0))


# --- best weights, plateau, checkpoints ------------------------------------------------


def scripted_validation(monkeypatch, scores):
    """Make validation return ``scores`` in turn and remember the weights it saw."""
    seen: list[dict[str, torch.Tensor]] = []

    def evaluate(model, stacks, names, device, direction="forward", predictions=None):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"background": 1.0, "square": scores[len(seen) - 1]}

    monkeypatch.setattr(trainer_module, "evaluate_stacks", evaluate)
    return seen


def test_the_best_validated_weights_are_returned(tiny_config, square_stack, monkeypatch):
    seen = scripted_validation(monkeypatch, [0.2, 0.9, 0.1, 0.3])
    stack = square_stack(4)
    result = fit(
        model_of(tiny_config, "unet"), [stack], recipe(steps=8, val_every=2), val_stacks=[stack]
    )
    final = result.model.state_dict()
    assert all(torch.equal(final[k], seen[1][k]) for k in final)
    assert not all(torch.equal(final[k], seen[-1][k]) for k in final)
    assert result.record["best"] == {"step": 4, "val_dice_mean": 0.9}


def test_without_keep_best_the_last_weights_are_returned(tiny_config, square_stack, monkeypatch):
    seen = scripted_validation(monkeypatch, [0.2, 0.9, 0.1, 0.3])
    stack = square_stack(4)
    config = recipe(steps=8, val_every=2, keep_best=False)
    result = fit(model_of(tiny_config, "unet"), [stack], config, val_stacks=[stack])
    final = result.model.state_dict()
    assert all(torch.equal(final[k], seen[-1][k]) for k in final)


def test_plateau_stop(tiny_config, square_stack, monkeypatch):
    scripted_validation(monkeypatch, [0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    stack = square_stack(4)
    events: list = []
    config = recipe(steps=12, val_every=2, patience=2)
    result = fit(
        model_of(tiny_config, "unet"),
        [stack],
        config,
        val_stacks=[stack],
        callback=events.append,
    )
    assert result.record["steps_done"] == 6  # validations at 2 (best), 4, 6: two stale
    assert "stopped early" in events[-1].message


def test_checkpoints_last_and_best(tiny_config, square_stack, monkeypatch):
    scripted_validation(monkeypatch, [0.2, 0.9, 0.1])
    stack = square_stack(4)
    calls: list[tuple[str, int]] = []

    def on_checkpoint(result, which):
        calls.append((which, int(result.record["epochs_done"])))
        assert isinstance(result.model, torch.nn.Module)

    config = recipe(steps=6, val_every=2, checkpoint_seconds=0)
    fit(
        model_of(tiny_config, "unet"),
        [stack],
        config,
        val_stacks=[stack],
        on_checkpoint=on_checkpoint,
    )
    assert calls == [("last", 1), ("best", 1), ("last", 2), ("best", 2), ("last", 3)]


@pytest.mark.parametrize("name", ["unet", "drsegunet"])
def test_a_checkpoint_hook_that_draws_random_numbers_or_evaluates_changes_nothing(
    tiny_config, square_stack, name
):
    """A learning curve scored from the hook (it builds models, which draws from the
    global generators, and puts the network in eval mode) leaves the run as it was:
    augmentation, dropout and BatchNorm see what they would have without it."""
    stack = square_stack(6)
    config = recipe(steps=8, augment=True, checkpoint_seconds=0)

    def meddling(result, which):
        torch.rand(7)
        np.random.rand(3)  # noqa: NPY002 - the legacy global generator is the point
        create_model(tiny_config(name))
        result.model.eval()

    def trained(hook):
        result = fit(model_of(tiny_config, name), [stack], config, on_checkpoint=hook)
        return result.model.state_dict()

    plain, hooked = trained(None), trained(meddling)
    assert plain.keys() == hooked.keys()
    assert all(torch.equal(plain[key], hooked[key]) for key in plain)


def test_mirroring_takes_effect_in_training(tiny_config, square_stack):
    stack = square_stack(6)

    def trained(**changes):
        config = recipe(steps=4, augment=True, **changes)
        return fit(model_of(tiny_config, "drsegunet"), [stack], config).model.state_dict()

    plain, again, mirrored = trained(), trained(mirror=False), trained(mirror=True)
    assert all(torch.equal(plain[k], again[k]) for k in plain)
    assert not all(torch.equal(plain[k], mirrored[k]) for k in plain)


def affine_ranges_seen(monkeypatch) -> list[tuple[float, tuple[float, float]]]:
    """Record the ``(rotation, zoom)`` of every affine the training steps draw."""
    seen = []
    original = step_module.random_affine_patch

    def spy(images, labels, mask, generator, **kwargs):
        seen.append((kwargs["rotation"], kwargs["zoom"]))
        return original(images, labels, mask, generator, **kwargs)

    monkeypatch.setattr(step_module, "random_affine_patch", spy)
    return seen


def test_the_affine_ranges_reach_every_training_step(tiny_config, square_stack, monkeypatch):
    seen = affine_ranges_seen(monkeypatch)
    config = recipe(steps=3, augment=True, rotation=0.5, zoom=(0.7, 1.4))
    fit(model_of(tiny_config, "drsegunet"), [square_stack(6)], config)
    assert seen == [(0.5, (0.7, 1.4))] * 3


@pytest.mark.parametrize("name", sorted(MODELS))
def test_runs_take_their_own_affine_ranges_and_slices_the_general_ones(name, monkeypatch):
    seen = affine_ranges_seen(monkeypatch)
    config = recipe(
        steps=2, augment=True, rotation=0.5, zoom=(0.7, 1.4), run_rotation=0.2, run_zoom=(0.8, 1.0)
    )
    net = create_model(ModelConfig(name, num_classes=2, widths=(4, 4, 8, 8, 8)))
    fit(net, [whole_stack(12, annotated=(2, 6, 9))], config)
    if net.kind is ModelKind.SEQUENCE:
        assert seen == [(0.2, (0.8, 1.0))] * 2
    elif net.kind is ModelKind.SLICE:
        assert seen == [(0.5, (0.7, 1.4))] * 2
    else:  # 3D sub-volumes are not augmented
        assert seen == []


def test_wider_affine_ranges_change_the_run(tiny_config, square_stack):
    stack = square_stack(6)

    def trained(**changes):
        config = recipe(steps=4, augment=True, **changes)
        return fit(model_of(tiny_config, "drsegunet"), [stack], config).model.state_dict()

    plain, paper, wide = (
        trained(),
        trained(rotation=0.2, zoom=(0.8, 1.0)),
        trained(zoom=(0.7, 1.4)),
    )
    assert all(torch.equal(plain[k], paper[k]) for k in plain)  # the defaults are the paper's
    assert not all(torch.equal(plain[k], wide[k]) for k in plain)


@pytest.mark.parametrize(
    "changes",
    [
        {"rotation": -0.1},
        {"zoom": (1.2, 0.9)},
        {"zoom": (0.0, 1.0)},
        {"run_rotation": -0.1},
        {"run_zoom": (1.2, 0.9)},
    ],
)
def test_invalid_affine_ranges_are_refused_before_training(tiny_config, square_stack, changes):
    with pytest.raises(NumsnetError, match="augmentation ranges"):
        fit(model_of(tiny_config, "drsegunet"), [square_stack(6)], recipe(**changes))


# --- batch sources -------------------------------------------------------------------


def test_sources_are_chosen_by_the_model_kind():
    stack = whole_stack()
    assert isinstance(make_source(ModelKind.SLICE, [stack], 2), SliceSource)
    assert isinstance(make_source(ModelKind.SEQUENCE, [stack], 4), SequenceSource)
    assert isinstance(make_source(ModelKind.VOLUME, [stack], 2, depth=4), SubvolumeSource)
    assert make_source(ModelKind.SLICE, [stack], 50).batch_size == 3  # clamped


def test_slice_source_reads_only_annotated_slices_and_draws_unannotated_apart():
    stack = whole_stack(n=12, annotated=(2, 6, 9))
    stack.images[:] = np.arange(12, dtype=np.float32)[:, None, None]
    source = SliceSource([stack], batch_size=2, unlabelled_per_batch=3)
    batches = list(source.epoch(torch.Generator().manual_seed(0)))
    assert len(batches) == source.steps_per_epoch() == 2
    seen = sorted(int(v) for b in batches for v in b.images[:, 0, 0, 0])
    assert seen == [2, 6, 9]
    for b in batches:
        drawn = {int(v) for v in b.unlabelled[:, 0, 0, 0]}
        assert b.unlabelled.shape[0] == 3 and not drawn & {2, 6, 9}


def test_sequence_runs_hold_neighbours_with_a_mask_and_a_random_offset():
    stack = whole_stack(n=12, annotated=(2, 6, 9))
    stack.images[:] = np.arange(12, dtype=np.float32)[:, None, None]
    source = SequenceSource([stack], run_length=4)
    assert source.steps_per_epoch() == 3
    positions: dict[int, set[int]] = {2: set(), 6: set(), 9: set()}
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        for batch in source.epoch(generator):
            index = [int(v) for v in batch.images[:, 0, 0, 0]]
            assert index == list(range(index[0], index[0] + 4))  # consecutive, in order
            assert batch.ordered and batch.mask is not None
            counted = [i for i, m in zip(index, batch.mask[:, 0, 0], strict=True) if m]
            assert counted == [i for i in index if i in (2, 6, 9)]  # annotated only
            for z in counted:
                positions[z].add(index.index(z))
    assert positions[6] == {0, 1, 2, 3}  # the target moves through the run
    assert positions[2] == {0, 1, 2}  # clipped at the top of the stack


def test_reversed_runs_go_either_way_with_labels_and_mask_following_the_images():
    stack = whole_stack(n=12, annotated=(2, 6, 9))
    stack.images[:] = np.arange(12, dtype=np.float32)[:, None, None]
    stack.labels[:] = np.arange(12, dtype=np.uint8)[:, None, None] % 3
    generator = torch.Generator().manual_seed(0)
    orders = []
    for _ in range(10):
        for batch in SequenceSource([stack], run_length=4, reverse=True).epoch(generator):
            index = [int(v) for v in batch.images[:, 0, 0, 0]]
            step = 1 if index[1] > index[0] else -1
            assert index == list(range(index[0], index[0] + 4 * step, step))  # consecutive
            assert [int(v) for v in batch.labels[:, 0, 0]] == [i % 3 for i in index]
            counted = [i for i, m in zip(index, batch.mask[:, 0, 0], strict=True) if m]
            assert counted == [i for i in index if i in (2, 6, 9)]
            orders.append(step)
    assert 0.3 < orders.count(-1) / len(orders) < 0.7  # about half reversed
    assert orders.count(-1) and orders.count(1)
    plain = SequenceSource([stack], run_length=4).epoch(torch.Generator().manual_seed(0))
    assert all(int(b.images[1, 0, 0, 0]) > int(b.images[0, 0, 0, 0]) for b in plain)


@pytest.mark.parametrize("augment", [True, False])
def test_the_trainer_reverses_runs_only_with_augmentation(tiny_config, augment):
    from napari_numsnet.engine.trainer import _source_for

    net = model_of(tiny_config, "numsnet")
    source = _source_for(net, [whole_stack()], recipe(augment=augment, reverse_runs=True))
    assert isinstance(source, SequenceSource) and source.reverse is augment
    assert _source_for(net, [whole_stack()], recipe(augment=True)).reverse is False


def test_sequence_runs_are_clamped_to_a_short_stack():
    stack = whole_stack(n=3, annotated=(1,))
    batch = next(iter(SequenceSource([stack], run_length=5).epoch(torch.Generator())))
    assert batch.images.shape[0] == 3


def test_runs_are_augmented_with_one_transform_and_fused_in_order(tiny_config, monkeypatch):
    """With augmentation on (the default), a NUMSnet run keeps one geometry, so its
    features are carried from slice to slice; only the run's first slice meets itself."""
    stack = whole_stack(n=10, annotated=(3, 7))
    stack.images[:] = np.arange(10, dtype=np.float32)[:, None, None] / 10
    calls = []
    real = step_module.random_affine_patch

    def spy(images, labels, mask, generator, same_for_batch=False, **kwargs):
        calls.append((np.rint(images[:, 0, 0, 0].numpy() * 10).astype(int), same_for_batch))
        return real(images, labels, mask, generator, same_for_batch=same_for_batch, **kwargs)

    monkeypatch.setattr(step_module, "random_affine_patch", spy)
    config = recipe(steps=4, batch_size=4, augment=True, intensity_augment=True)
    fit(model_of(tiny_config, "numsnet"), [stack], config)
    assert len(calls) == 4
    for index, same in calls:
        assert same
        assert index.tolist() == list(range(index[0], index[0] + 4))
        # The fusion concatenates each slice with the batch shifted by one: slice k of the
        # run meets slice k - 1 of the stack; only k = 0 meets itself.
        previous = np.concatenate([index[:1], index[:-1]])
        assert [int(a == b) for a, b in zip(index, previous, strict=True)] == [1, 0, 0, 0]


def test_the_run_length_of_the_numsnet_family_is_its_own_setting(tiny_config, monkeypatch):
    """``run_length`` sets how many consecutive slices a NUMSnet run holds, whatever the
    batch size of slice models; 0 takes the batch size; below 0 is refused."""
    stack = whole_stack(n=10, annotated=(3, 7))
    sizes = []
    real = step_module.random_affine_patch

    def spy(images, labels, mask, generator, **kwargs):
        sizes.append(images.shape[0])
        return real(images, labels, mask, generator, **kwargs)

    monkeypatch.setattr(step_module, "random_affine_patch", spy)
    fit(model_of(tiny_config, "numsnet"), [stack], recipe(steps=2, augment=True, run_length=5))
    fit(model_of(tiny_config, "numsnet"), [stack], recipe(steps=2, augment=True))
    fit(model_of(tiny_config, "unet"), [stack], recipe(steps=2, augment=True, run_length=5))
    assert sizes == [5, 5, 2, 2, 2, 2]  # runs of 5; of the batch size; slices: the batch
    with pytest.raises(NumsnetError, match="Run length -1"):
        fit(model_of(tiny_config, "numsnet"), [stack], recipe(run_length=-1))


def test_volume_source_masks_unannotated_slices():
    stack = whole_stack(n=12, annotated=(5,))
    source = SubvolumeSource([stack], batch_size=1, depth=4)
    batch = next(iter(source.epoch(torch.Generator().manual_seed(1))))
    assert batch.images.shape == (1, 1, 4, 32, 32)
    assert int(batch.mask.any(dim=(2, 3)).sum()) == 1
    assert batch.annotated_slices == 1


# --- the semi-supervised term ----------------------------------------------------------


def test_semi_supervised_term_never_reads_unannotated_labels(tiny_config):
    config = recipe(steps=10, semi_supervised=1.0, confidence=0.0, augment=True)
    weights = []
    for garbage in (0, 1):
        stack = whole_stack(n=10, annotated=(2, 7))
        stack.labels[~stack.annotated] = garbage
        weights.append(fit(model_of(tiny_config, "unet"), [stack], config).model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_semi_supervised_term_takes_effect(tiny_config):
    stack = whole_stack(n=10, annotated=(2, 7))
    on = fit(
        model_of(tiny_config, "unet"),
        [stack],
        recipe(steps=10, semi_supervised=1.0, confidence=0.0),
    )
    off = fit(model_of(tiny_config, "unet"), [stack], recipe(steps=10))
    a, b = on.model.state_dict(), off.model.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_semi_supervised_term_is_refused_where_it_cannot_apply(tiny_config):
    with pytest.raises(NumsnetError, match="slice models"):
        fit(model_of(tiny_config, "numsnet"), [whole_stack()], recipe(semi_supervised=1.0))


# --- intensity augmentation ------------------------------------------------------------


def test_intensity_augmentation_is_seeded_and_one_draw_per_run():
    images = torch.rand(1, 1, 16, 16).repeat(6, 1, 1, 1)
    out = [random_intensity(images, torch.Generator().manual_seed(s)) for s in (3, 3)]
    assert torch.equal(out[0], out[1]) and out[0].shape == images.shape
    changed = [
        random_intensity(images, torch.Generator().manual_seed(s), same_for_batch=True)
        for s in range(20)
    ]
    for batch in changed:  # one draw: identical slices differ only by their noise
        means = batch.mean(dim=(1, 2, 3))
        assert torch.allclose(means, means[:1].expand_as(means), atol=0.01)
        assert torch.allclose(batch, batch[:1].expand_as(batch), atol=0.15)
    assert any(not torch.equal(b, images) for b in changed)


# --- the planner -----------------------------------------------------------------------


def test_spread_covers_the_whole_stack_and_its_extent():
    assert spread_indices(0, 30, 3).tolist() == [5, 15, 25]
    split = select_slices(30, SamplingConfig(strategy="spread"))
    assert split.train.tolist() == [5, 15, 25]
    assert len(split.val) == 1 and split.val[0] not in split.train
    mid_rand = select_slices(30, SamplingConfig(strategy="mid_rand"))
    assert mid_rand.train.min() >= 7 and mid_rand.train.max() <= 22  # the middle half only
    inside = select_slices(40, SamplingConfig(strategy="spread"), extent=(20, 40))
    assert inside.train.min() >= 20 and len(inside.train) == 4
    for n in (2, 6, 17, 301):
        split = select_slices(n, SamplingConfig(strategy="spread", val_fraction=0.05))
        assert np.all(np.diff(split.train) > 0) and not set(split.train) & set(split.val)


# --- Dice + CE -------------------------------------------------------------------------


@pytest.mark.parametrize("exclusive", [True, False])
def test_dice_ce_is_dice_plus_ce_with_and_without_a_mask(exclusive):
    from napari_numsnet.engine.losses import ce_loss, dice_ce_loss, dice_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 16, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 4 if exclusive else 5, (3, 16, 16), generator=g)
    for mask in (None, torch.rand(3, 16, 16, generator=g) > 0.4):
        value = dice_ce_loss(logits, labels, exclusive, mask)
        expected = dice_loss(logits, labels, exclusive, mask) + ce_loss(
            logits, labels, exclusive, mask
        )
        assert float(value) == pytest.approx(float(expected), rel=1e-5)
    if exclusive:  # pixels outside the mask get no gradient
        mask = torch.zeros(3, 16, 16, dtype=torch.bool)
        mask[0] = True
        dice_ce_loss(logits, labels, True, mask).backward()
        assert logits.grad[1:].abs().max() == 0 and logits.grad[0].abs().max() > 0
