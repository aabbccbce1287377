"""The recipe composes the chosen adversarial loss with lazy R1, GP and DiffAugment draws keyed per global sample."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from distgan.augment import apply
from distgan.errors import ConfigError
from distgan.losses import d_hinge, g_hinge, gradient_penalty, r1_penalty
from distgan.losses.recipe import PhaseContext, Recipe, d_objective, draw, g_objective, slice_draws


def _d() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(64, 1), nn.Flatten(0))


def test_d_objective_is_the_adversarial_loss_plus_weighted_penalties_on_r1_steps_only() -> None:
    D, real, fake = _d(), torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    recipe = Recipe(adversarial="hinge", r1_gamma=10.0, r1_every=4, gp_lambda=2.0)
    draws = draw(recipe, torch.Generator(), (0, 3, 0), 6, (8, 8), torch.device("cpu"))
    adv = d_hinge(D(real), D(fake))
    gp = gradient_penalty(D, real, fake, draws["alpha"])
    plain, stats = d_objective(recipe, D, D, real, fake, draws, r1_step=False)
    assert torch.allclose(plain, adv + 2.0 * gp) and "r1" not in stats
    reg, stats = d_objective(recipe, D, D, real, fake, draws, r1_step=True)
    r1, _ = r1_penalty(D, real)
    assert torch.allclose(reg, adv + 10.0 / 2 * 4 * r1 + 2.0 * gp) and torch.allclose(stats["r1"], r1)
    assert [recipe.is_r1_step(k) for k in range(5)] == [True, False, False, False, True]
    g, _ = g_objective(recipe, D, fake)
    assert torch.allclose(g, g_hinge(D(fake)))


def test_draws_are_keyed_and_slice_per_global_sample() -> None:
    recipe = Recipe(gp_lambda=10.0, diffaugment="color,translation,cutout")
    gen, cpu = torch.Generator(), torch.device("cpu")
    whole = draw(recipe, gen, (0, 7, 0), 8, (16, 16), cpu)
    again = draw(recipe, gen, (0, 7, 0), 8, (16, 16), cpu)
    other = draw(recipe, gen, (0, 8, 0), 8, (16, 16), cpu)
    assert torch.equal(whole["alpha"], again["alpha"]) and not torch.equal(whole["alpha"], other["alpha"])
    part = slice_draws(whole, 2, 4)  # micro-batch 0 of rank 1 with 2 ranks x 2
    assert torch.equal(part["alpha"], whole["alpha"][2:4])
    x = torch.randn(8, 1, 16, 16)
    aug = functools.partial(apply, policy=recipe.policy, params=whole["aug_real"])
    part_aug = functools.partial(apply, policy=recipe.policy, params=part["aug_real"])
    assert torch.equal(part_aug(x[2:4]), aug(x)[2:4])
    ctx = PhaseContext(recipe, part)
    assert torch.equal(ctx.augment("real")(x[2:4]), part_aug(x[2:4]))
    assert PhaseContext(Recipe(), {}).augment("fake")(x) is x  # no policy: the identity


def test_bad_values_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="^loss.r1_every"):
        Recipe(r1_every=0).validate()
    with pytest.raises(ConfigError, match="^loss.gp_lambda"):
        Recipe(gp_lambda=-1.0).validate()
    with pytest.raises(ConfigError, match="^augment.diffaugment"):
        Recipe(diffaugment="flip").validate()
    Recipe(adversarial="bce", gp_lambda=10.0).validate()  # legal, if unusual
