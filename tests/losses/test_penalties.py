"""R1 and WGAN-GP: against gradients written out by hand, fp16-scaled and bf16 equal to fp32, and the
penalty's own gradient reaching D's parameters (double backward) through conv, BN, LeakyReLU and spectral norm."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import spectral_norm

from distgan.losses import gradient_penalty, interpolate, r1_penalty


def _conv_d(sn: bool = False, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    wrap = spectral_norm if sn else (lambda m: m)
    return nn.Sequential(
        wrap(nn.Conv2d(1, 4, 3, 2, 1)),
        nn.BatchNorm2d(4),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        wrap(nn.Linear(4 * 4 * 4, 1)),
        nn.Flatten(0),
    ).to(dtype)


def test_r1_and_gp_of_a_linear_critic_are_its_weight_norm() -> None:
    # D(x) = <w, x> + b: grad_x D = w for every image, so R1 = ||w||^2 and GP = (||w|| - 1)^2.
    w = torch.randn(1, 3, 4, 4)
    critic = lambda x: (x * w).flatten(1).sum(1) + 0.3  # noqa: E731
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    r1, logits = r1_penalty(critic, real)
    assert torch.allclose(r1, w.square().sum()) and torch.allclose(logits, critic(real))
    gp = gradient_penalty(critic, real, fake, torch.rand(5))
    assert torch.allclose(gp, (w.norm() - 1).square())


def test_gp_is_taken_at_the_interpolates() -> None:
    # D(x) = ||x||^2 / 2: grad = x_hat, so GP = mean (||x_hat|| - 1)^2 with x_hat = a real + (1 - a) fake.
    real, fake, alpha = torch.randn(6, 2, 3, 3), torch.randn(6, 2, 3, 3), torch.rand(6)
    critic = lambda x: x.square().flatten(1).sum(1) / 2  # noqa: E731
    x_hat = alpha.view(-1, 1, 1, 1) * real + (1 - alpha.view(-1, 1, 1, 1)) * fake
    assert torch.allclose(interpolate(real, fake, alpha), x_hat)
    expected = (x_hat.flatten(1).norm(dim=1) - 1).square().mean()
    assert torch.allclose(gradient_penalty(critic, real, fake, alpha), expected)


def test_the_condition_is_kept() -> None:
    # A conditional critic D(x, y) = <w_y, x>: the penalty uses each image's own class weights.
    w = torch.randn(3, 8)
    label = torch.tensor([0, 2, 2, 1])
    critic = lambda x: (x * w[label]).sum(1)  # noqa: E731
    r1, _ = r1_penalty(critic, torch.randn(4, 8))
    assert torch.allclose(r1, w[label].square().sum(1).mean())


def test_r1_and_gp_equal_autograd_grad_on_a_conv_d() -> None:
    D = _conv_d()
    real, fake, alpha = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8), torch.rand(6)
    x = real.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).sum(), x)
    r1, _ = r1_penalty(D, real)
    assert torch.allclose(r1, g.pow(2).sum(dim=(1, 2, 3)).mean(), rtol=1e-5)
    x_hat = (alpha.view(-1, 1, 1, 1) * real + (1 - alpha.view(-1, 1, 1, 1)) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(D(x_hat).sum(), x_hat)
    gp = gradient_penalty(D, real, fake, alpha)
    assert torch.allclose(gp, ((g.pow(2).sum(dim=(1, 2, 3)).sqrt() - 1) ** 2).mean(), rtol=1e-5)


def test_fp16_penalty_needs_the_scale_and_equals_fp32_with_it() -> None:
    # Input gradients of ~1e-9 underflow in an fp16 backward; scaled by 2^16 (GradScaler's initial scale) they
    # survive, and unscaled before squaring the fp16 penalty equals the fp32 one on the same weights and batch.
    torch.manual_seed(0)
    D32 = nn.Sequential(nn.Linear(16, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1), nn.Flatten(0))
    with torch.no_grad():
        D32[0].weight.mul_(1e-4)  # weights ~1e-5 each: their product, the input gradient, ~1e-9
        D32[2].weight.mul_(1e-4)
    D16 = copy.deepcopy(D32).half()
    real = torch.randn(8, 16)
    reference, _ = r1_penalty(D32, real)
    unscaled, _ = r1_penalty(D16, real.half())
    scale = torch.full((1,), 65536.0)  # a GradScaler's `_scale`: a (1,) fp32 tensor
    scaled, _ = r1_penalty(D16, real.half(), scale)
    assert reference > 0 and unscaled == 0  # the underflow the recipe is for
    assert scaled.dtype == torch.float32
    assert torch.allclose(scaled, reference, rtol=2e-2)  # fp16 has ~3 significant digits
    gp_ref = gradient_penalty(D32, real, real.flip(0), torch.linspace(0, 1, 8))
    gp16 = gradient_penalty(D16, real.half(), real.half().flip(0), torch.linspace(0, 1, 8), scale)
    assert torch.allclose(gp16, gp_ref, rtol=1e-3)


def test_scaled_penalty_equals_unscaled_in_fp32() -> None:
    D = _conv_d()
    real = torch.randn(4, 1, 8, 8)
    plain, _ = r1_penalty(D, real)
    scaled, _ = r1_penalty(D, real, torch.tensor([65536.0]))
    assert torch.allclose(plain, scaled, rtol=1e-5)


def test_bf16_autocast_penalty_is_fp32_and_close_to_fp32() -> None:
    D = _conv_d()
    real, fake, alpha = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8), torch.rand(6)
    r1_ref, _ = r1_penalty(D, real)
    gp_ref = gradient_penalty(D, real, fake, alpha)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r1, logits = r1_penalty(D, real)
        gp = gradient_penalty(D, real, fake, alpha)
    assert logits.dtype == torch.bfloat16 and r1.dtype == gp.dtype == torch.float32
    assert torch.allclose(r1, r1_ref, rtol=5e-2) and torch.allclose(gp, gp_ref, rtol=5e-2)


@pytest.mark.parametrize("sn", [False, True], ids=["plain", "spectral_norm"])
def test_penalty_gradient_reaches_every_parameter_of_d(sn: bool) -> None:
    D = _conv_d(sn)
    real, fake = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    r1, logits = r1_penalty(D, real)
    (r1 + gradient_penalty(D, real, fake, torch.rand(6)) + logits.mean()).backward()
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("sn", [False, True], ids=["plain", "spectral_norm"])
def test_double_backward_matches_finite_differences(sn: bool) -> None:
    # d R1 / d W of the last layer by double backward equals the numerical derivative (float64, eval mode:
    # no batch statistics or power iteration changing between evaluations).
    D = _conv_d(sn, torch.float64).eval()
    real = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    name = "4.parametrizations.weight.original" if sn else "4.weight"
    params = dict(D.named_parameters())
    weight = params[name].detach().clone().requires_grad_(True)

    def r1_of(w: torch.Tensor) -> torch.Tensor:
        return r1_penalty(lambda x: functional_call(D, {**params, name: w}, (x,)), real)[0]

    assert torch.autograd.gradcheck(r1_of, (weight,), eps=1e-6, atol=1e-5, fast_mode=True)
