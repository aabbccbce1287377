"""EMA of G: half-life in images, StyleGAN2's ramp-up, buffers copied, frozen copy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distgan.train.ema import EMA, ema_beta


def test_half_life_in_images():
    G = nn.Linear(3, 2)
    w0 = G.weight.detach().clone()
    ema = EMA(G, ema_kimg=1.0, ema_rampup=None)  # half-life: 1,000 images
    with torch.no_grad():
        G.weight.add_(1.0)
    for step in range(10):  # 10 steps x 100 images = one half-life
        ema.update(100, 100 * (step + 1))
    assert torch.allclose(ema.module.weight, w0 + 0.5, atol=1e-6)  # halfway from the old to the new weights
    assert torch.equal(G.weight, w0 + 1.0)  # G itself untouched


def test_beta_same_for_same_images_whatever_the_batch():
    # 4 steps of 50 images decay exactly as 1 step of 200: the average follows images, not steps
    assert ema_beta(50, 10_000, 10.0, None) ** 4 == pytest.approx(ema_beta(200, 10_000, 10.0, None), rel=1e-12)


def test_rampup_shortens_the_half_life_early():
    # StyleGAN2-ADA: half-life = min(ema_kimg * 1000, images_seen * ema_rampup)
    assert ema_beta(64, 2_000, 10.0, 0.05) == pytest.approx(0.5 ** (64 / 100))
    assert ema_beta(64, 10_000_000, 10.0, 0.05) == pytest.approx(0.5 ** (64 / 10_000))
    assert ema_beta(64, 0, 10.0, 0.05) == 0.0  # the very first update copies G


def test_buffers_are_copied_and_the_copy_is_frozen():
    G = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    ema = EMA(G, ema_kimg=10.0, ema_rampup=None)
    G(torch.randn(4, 1, 5, 5))  # training mode: updates G's running statistics
    ema.update(4, 4)
    bn, bn_ema = G[1], ema.module[1]
    assert torch.equal(bn_ema.running_mean, bn.running_mean) and torch.equal(bn_ema.running_var, bn.running_var)
    assert int(bn_ema.num_batches_tracked) == 1
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training
    assert all(p.requires_grad for p in G.parameters())  # G is not changed by making its EMA
