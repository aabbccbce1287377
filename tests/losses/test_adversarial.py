"""The GAN loss math on logits equals the seed's BCE on probabilities, and stays finite where that fails."""

from __future__ import annotations

import torch

from distgan.losses import d_bce, g_nonsaturating


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
