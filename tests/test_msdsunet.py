"""MSDS-UNet and the volumetric engine: sub-volumes, loss mask, sliding-window prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet import pipeline
from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_numsnet.engine.losses import bdl_loss
from napari_numsnet.engine.output_loss import supervised_loss
from napari_numsnet.engine.volumetric import (
    VolumeSample,
    iter_subvolumes,
    predict_volumetric,
    window_depth,
)
from napari_numsnet.models import create_model

TINY = (4, 8, 8, 8, 8)


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(ModelConfig("msdsunet", num_classes=3, widths=TINY))


def test_two_pathway_heads():
    out = tiny().train()(torch.randn(2, 1, 8, 32, 32))
    assert out.logits.shape == (2, 3, 8, 32, 32)
    shapes = [tuple(h.shape[2:]) for h in out.heads]
    # fused, four global sides at full size, three local sides at their own scales
    assert shapes == [(8, 32, 32)] * 5 + [(4, 16, 16), (2, 8, 8), (2, 4, 4)]
    model = tiny().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 4, 32, 32)).heads is None


def test_sizes_the_pooling_cannot_take_are_refused():
    with pytest.raises(ValueError, match="multiple of"):
        tiny()(torch.randn(1, 1, 6, 32, 32))


def sample(z: int = 10, annotated=(2, 7)) -> VolumeSample:
    rng = np.random.default_rng(0)
    mask = np.zeros(z, bool)
    mask[list(annotated)] = True
    labels = rng.integers(0, 3, (z, 32, 32))
    return VolumeSample(rng.random((z, 32, 32), dtype=np.float32), labels, mask)


def test_each_window_holds_its_annotated_slice_and_masks_the_rest():
    s = sample()
    batches = list(iter_subvolumes([s], 4, 1, torch.Generator().manual_seed(0)))
    assert len(batches) == 2
    for batch in batches:
        assert batch.images.shape == (1, 1, 4, 32, 32)
        marked = batch.mask[0, :, 0, 0]
        assert int(marked.sum()) >= 1
        # the masked slices are exactly the annotated slices of the window
        window_start = int(
            np.flatnonzero((s.images == batch.images[0, 0, 0].numpy()).all((1, 2)))[0]
        )
        np.testing.assert_array_equal(marked.numpy(), s.annotated[window_start : window_start + 4])


def test_short_stacks_are_padded_without_mask():
    s = sample(z=3, annotated=(1,))
    (batch,) = iter_subvolumes([s], 4, 2, torch.Generator().manual_seed(0))
    assert batch.images.shape[2] == 4
    assert batch.mask[0, :, 0, 0].tolist() == [False, True, False, False]


def test_unannotated_slices_do_not_change_the_loss():
    model = tiny().train()
    x = torch.randn(1, 1, 4, 32, 32)
    labels = torch.randint(0, 3, (1, 4, 32, 32))
    mask = torch.zeros(1, 4, 32, 32, dtype=torch.bool)
    mask[:, 1] = True
    out = model(x)
    other = labels.clone()
    other[:, [0, 2, 3]] = 2 - other[:, [0, 2, 3]]
    a = supervised_loss(bdl_loss, out, labels, True, mask)
    b = supervised_loss(bdl_loss, out, other, True, mask)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, supervised_loss(bdl_loss, out, other, True, None))


@pytest.mark.parametrize("z", [3, 9, 20])
def test_sliding_window_prediction_covers_the_stack(z):
    model = tiny()
    prob = predict_volumetric(
        model,
        np.random.default_rng(z).random((z, 32, 32), dtype=np.float32),
        torch.device("cpu"),
        depth=8,
    )
    assert prob.shape == (3, z, 32, 32)
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
    assert window_depth(model, z, 8) % 4 == 0


def test_pipeline_trains_the_3d_model_from_a_partial_annotation():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (12, 32, 32)).astype(np.float32)
    labels = np.zeros((12, 32, 32), np.uint8)
    labels[:, 10:20, 10:20] = 1
    image[labels == 1] += 3
    labels[[0, 1, 2, 4, 5, 6, 7, 9, 10, 11]] = 7  # garbage outside the annotation
    stack = pipeline.AnnotatedStack(image, labels, annotated=[3, 8])
    losses = []
    ckpt = pipeline.train(
        stack,
        ModelConfig("msdsunet", num_classes=2, widths=TINY),
        TrainConfig(epochs=12, batch_size=2, learning_rate=3e-3, device="cpu", amp=False),
        PreprocessConfig(size=32),
        callback=lambda e: losses.append(e.loss) if e.kind == "epoch" else None,
    )
    assert ckpt.record["annotated"] == {"stack": [3, 8]}
    assert losses[-1] < losses[0]
    assert pipeline.predict(ckpt, image).labels.shape == image.shape


def test_builds_on_the_meta_device_for_flop_counting():
    with torch.device("meta"):
        model = create_model(ModelConfig("msdsunet", num_classes=4))
    assert model.required_depth == 4
    assert next(model.parameters()).is_meta
