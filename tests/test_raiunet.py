"""RAIU-Net's parts: spectral pooling, hybrid pooling, inception and attention blocks."""

from __future__ import annotations

import torch

from napari_numsnet.models.raiunet import (
    DSC,
    HybridPool,
    InceptionConv,
    SpectralDepthAttention,
    SpectralSpatialAttention,
    spectral_pool,
)


def test_spectral_pool_to_one_pixel_is_the_mean():
    x = torch.randn(2, 3, 9, 7)
    torch.testing.assert_close(spectral_pool(x, (1, 1)), x.mean((-2, -1), keepdim=True))


def test_spectral_pool_keeps_constants_and_smooth_images():
    torch.testing.assert_close(
        spectral_pool(torch.full((1, 1, 8, 8), 3.0), (4, 4)), torch.full((1, 1, 4, 4), 3.0)
    )
    # A low-frequency cosine survives the low-pass of 'same' pooling unchanged ...
    xx = torch.arange(16.0)
    low = torch.cos(2 * torch.pi * xx / 16).expand(1, 1, 16, 16)
    torch.testing.assert_close(spectral_pool(low), low, atol=1e-5, rtol=0)
    # ... while the highest frequency is removed.
    high = torch.cos(torch.pi * xx).expand(1, 1, 16, 16)
    assert spectral_pool(high).abs().max() < 1e-5


def test_depthwise_separable_convolution_is_cheaper():
    dsc = DSC(16, 32, 3)
    full = torch.nn.Conv2d(16, 32, 3, padding=1)
    assert sum(p.numel() for p in dsc.parameters()) < sum(p.numel() for p in full.parameters()) / 4
    assert dsc(torch.randn(1, 16, 8, 8)).shape == (1, 32, 8, 8)


def test_hybrid_pool_and_inception_shapes():
    x = torch.randn(2, 4, 16, 12)
    assert HybridPool(4, 6, downsample=True)(x).shape == (2, 6, 8, 6)
    assert HybridPool(4, 6, downsample=False)(x).shape == (2, 6, 16, 12)
    assert InceptionConv(4, 8)(x).shape == (2, 8, 16, 12)


def test_attention_keeps_the_skip_shape_and_gates_it():
    skip, deep = torch.randn(2, 4, 16, 16), torch.randn(2, 8, 8, 8)
    depth = SpectralDepthAttention(4)(skip)
    assert depth.shape == skip.shape
    assert SpectralSpatialAttention(4, 8)(depth, deep).shape == skip.shape
