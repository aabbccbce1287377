"""The adversarial losses: BCE equals the seed's BCE on probabilities; hinge, wgan, lsgan equal hand-computed values."""

from __future__ import annotations

import pytest
import torch

from distgan.errors import ConfigError
from distgan.losses import (
    ADVERSARIAL,
    d_bce,
    d_hinge,
    d_lsgan,
    d_wgan,
    g_hinge,
    g_lsgan,
    g_nonsaturating,
    get_adversarial,
)


def test_d_loss_is_bce_on_probabilities() -> None:
    real, fake = torch.randn(16), torch.randn(16)
    bce = torch.nn.BCELoss()
    expected = bce(torch.sigmoid(real), torch.ones(16)) + bce(torch.sigmoid(fake), torch.zeros(16))
    assert torch.allclose(d_bce(real, fake), expected, atol=1e-6)
    manual = -(torch.log(torch.sigmoid(real)).mean() + torch.log(1 - torch.sigmoid(fake)).mean())
    assert torch.allclose(d_bce(real, fake), manual, atol=1e-5)


def test_g_loss_is_non_saturating() -> None:
    fake = torch.randn(16, requires_grad=True)
    loss = g_nonsaturating(fake)
    assert torch.allclose(loss, -torch.log(torch.sigmoid(fake)).mean(), atol=1e-6)
    loss.backward()
    # Non-saturating: where D confidently rejects fakes (very negative logits) the gradient stays large.
    very_fake = torch.full((4,), -20.0, requires_grad=True)
    g_nonsaturating(very_fake).backward()
    assert very_fake.grad.abs().min() > 0.2


def test_losses_are_finite_for_extreme_logits_under_autocast() -> None:
    real, fake = torch.tensor([80.0, -80.0]), torch.tensor([80.0, -80.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(d_bce(real, fake)) and torch.isfinite(g_nonsaturating(fake))


def test_hinge_wgan_lsgan_against_hand_computed_values() -> None:
    real = torch.tensor([2.0, 0.5, -1.0])  # hinge: relu(1 - r) = 0, 0.5, 2
    fake = torch.tensor([-2.0, 0.0, 1.5])  # hinge: relu(1 + f) = 0, 1, 2.5
    assert torch.allclose(d_hinge(real, fake), torch.tensor(2.5 / 3 + 3.5 / 3))
    assert torch.allclose(g_hinge(fake), torch.tensor(0.5 / 3))  # -mean(fake), mean(fake) = -0.5 / 3
    assert torch.allclose(d_wgan(real, fake), torch.tensor(-0.5 / 3 - 1.5 / 3))
    # lsgan: mean (r - 1)^2 = (1 + 0.25 + 4) / 3; mean f^2 = (4 + 0 + 2.25) / 3; G: mean (f - 1)^2 = (9 + 1 + 0.25) / 3
    assert torch.allclose(d_lsgan(real, fake), torch.tensor(5.25 / 3 + 6.25 / 3))
    assert torch.allclose(g_lsgan(fake), torch.tensor(10.25 / 3))


def test_every_loss_averages_patch_logits_and_is_fp32_under_autocast() -> None:
    real, fake = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)  # PatchGAN-shaped logits
    for name, (d_fn, g_fn) in ADVERSARIAL.items():
        flat = d_fn(real.flatten(), fake.flatten())
        assert torch.allclose(d_fn(real, fake), flat, atol=1e-6), name
        with torch.autocast("cpu", dtype=torch.bfloat16):
            d, g = d_fn(real.bfloat16(), fake.bfloat16()), g_fn(fake.bfloat16())
        assert d.dtype == g.dtype == torch.float32, name


def test_bce_is_the_registered_default_pair_and_unknown_names_are_config_errors() -> None:
    assert get_adversarial("bce") == (d_bce, g_nonsaturating)
    assert set(ADVERSARIAL) == {"bce", "hinge", "wgan", "lsgan"}
    with pytest.raises(ConfigError, match=r"^loss.adversarial: unknown loss 'hing' \(choose one of bce, hinge"):
        get_adversarial("hing")
