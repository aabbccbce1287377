"""A training recipe: what D's and G's phases compute beyond the networks (`loss:` and `augment:` config).

A family binds its condition into a *critic* (D as a function of the images alone: D(x), D(x, label),
D(source, x)), with the augmentation applied to everything D sees; these functions then add the chosen
adversarial loss, the penalties and their weights, the same for every family:

    D loss = adversarial_D(critic(real), critic(fake))
             + [on R1 steps] r1_gamma / 2 * r1_every * E ||grad_x critic(x)||^2     (lazy R1, StyleGAN2)
             + gp_lambda * E (||grad critic(x_hat)|| - 1)^2                         (WGAN-GP)
    G loss = adversarial_G(critic(G(z)))

R1 reuses the real forward (stylegan2-ada's "Dboth"), so a D step with R1 is one D pass on real and one
on fake images plus the double backward, and one backward: its gradients are all-reduced once.

The random parts (DiffAugment or ADA parameters for the real and the fake images, GP's interpolation
weights) are
drawn for the whole global batch from the generator the trainer seeded for this phase (by seed, step, phase,
D step) and each micro-batch takes its own samples out of them (`take_draws`), like the trainer's noise, so
that ranks and accumulation see the same draws.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from distgan.augment import ada, apply, parse_policy, sample_params, slice_params
from distgan.errors import ConfigError
from distgan.losses.adversarial import get_adversarial
from distgan.losses.penalties import Critic, gradient_penalty, r1_penalty

if TYPE_CHECKING:
    from distgan.config import Config

Augment = Callable[[Tensor | list[Tensor]], Tensor | list[Tensor]]  # what a family's critic applies to D's inputs
Draws = dict[str, Tensor | dict[str, Tensor]]  # "alpha": (N,); "aug_/ada_real", "aug_/ada_fake": augmentation


@dataclass(frozen=True)
class Recipe:
    """The resolved `loss.*` and `augment.diffaugment` keys."""

    adversarial: str = "bce"
    r1_gamma: float = 0.0  # 0: off
    r1_every: int = 1  # lazy R1: every k-th D step, scaled by k
    gp_lambda: float = 0.0  # 0: off
    diffaugment: str = ""  # "" or e.g. "color,translation,cutout"
    ada: ada.AdaController | None = field(default=None, compare=False)  # augment.ada: its p at draw time

    def validate(self) -> None:
        """Every problem is a ConfigError naming its key."""
        get_adversarial(self.adversarial)
        parse_policy(self.diffaugment)
        for key in ("r1_gamma", "gp_lambda"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"loss.{key}: must be >= 0 (0 turns it off), got {getattr(self, key)}")
        if self.r1_every < 1:
            raise ConfigError(f"loss.r1_every: must be >= 1, got {self.r1_every}")

    @classmethod
    def from_config(cls, cfg: Config, default_loss: str = "bce") -> Recipe:
        """The recipe of a config's `loss:` and `augment:` sections (loss.adversarial null: `default_loss`)."""
        loss, augment = cfg.loss, cfg.augment
        return cls(loss.adversarial or default_loss, loss.r1_gamma, loss.r1_every, loss.gp_lambda, augment.diffaugment)

    @property
    def policy(self) -> tuple[str, ...]:
        return parse_policy(self.diffaugment)

    def is_r1_step(self, d_step: int) -> bool:
        """Whether D step number `d_step` (0, 1, ... counted over the whole run) carries the R1 term."""
        return self.r1_gamma > 0 and d_step % self.r1_every == 0


def draw(
    recipe: Recipe,
    gen: torch.Generator,
    key: tuple[int, ...] | None,
    n: int,
    size: tuple[int, int],
    device: torch.device,
    role: str = "critic",
) -> Draws:
    """The recipe's random draws for a global batch of n in a phase of `role` "critic" (D's phases),
    "generator" (G's) or "none", from `gen` (seeded by `key` first, unless key is None: the caller seeded it).

    Fixed order: real augmentation, fake augmentation, GP weights; what is off (or not used by a generator
    phase, which only sees fakes) is not drawn. ADA draws the same numbers whatever its p (p sets masks).
    """
    if key is not None:
        gen.manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))
    out: Draws = {}
    if role == "none":
        return out
    if recipe.policy:
        if role == "critic":
            out["aug_real"] = sample_params(recipe.policy, n, size, gen, device)
        out["aug_fake"] = sample_params(recipe.policy, n, size, gen, device)
    if recipe.ada is not None:
        p, pipeline = recipe.ada.p, recipe.ada.pipeline
        if role == "critic":
            out["ada_real"] = ada.sample_params(p, n, size, gen, device, pipeline)
        out["ada_fake"] = ada.sample_params(p, n, size, gen, device, pipeline)
    if recipe.gp_lambda > 0 and role == "critic":
        out["alpha"] = torch.rand(n, generator=gen, device=device)
    return out


def take_draws(draws: Draws, take: Callable[[Tensor], Tensor]) -> Draws:
    """The draws of one micro-batch: `take` picks its samples (rows) out of each global-batch tensor."""
    return {k: {p: take(t) for p, t in v.items()} if isinstance(v, dict) else take(v) for k, v in draws.items()}


def slice_draws(draws: Draws, start: int, stop: int) -> Draws:
    """The draws of global samples start..stop-1."""
    return {k: slice_params(v, start, stop) if isinstance(v, dict) else v[start:stop] for k, v in draws.items()}


@dataclass
class PhaseContext:
    """What the trainer hands a phase beside (networks, batch, z): the recipe, this micro-batch's draws, whether
    this D step carries R1, the fp16 loss scale (a device tensor) or None, and how to average a statistic
    over all processes (running statistics that must stay equal on every rank: StyleGAN2's path-length mean)."""

    recipe: Recipe
    draws: Draws
    r1_step: bool = False
    scale: Tensor | None = None
    global_mean: Callable[[Tensor], Tensor] = lambda t: t  # mean over processes (differentiable); 1 process: t

    @property
    def double_backward(self) -> bool:
        """Whether this phase takes a penalty's input gradient (R1 on this D step, or GP): a double backward."""
        return self.r1_step or "alpha" in self.draws

    def augment(self, which: str) -> Augment:
        """The augmentation of D's "real" or "fake" inputs (the identity without a policy)."""
        if f"ada_{which}" in self.draws:
            return functools.partial(_ada, params=self.draws[f"ada_{which}"])
        params = self.draws.get(f"aug_{which}")
        if params is None:
            return _identity
        return functools.partial(apply, policy=self.recipe.policy, params=params)


def _ada(x: Tensor | list[Tensor], params: dict[str, Tensor]) -> Tensor | list[Tensor]:
    """ADA on D's input, or on each of D's inputs with the same parameters (pix2pix: source and image)."""
    return [ada.apply(t, params) for t in x] if isinstance(x, list) else ada.apply(x, params)


def _identity(x: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
    return x


def d_objective(
    recipe: Recipe,
    critic_real: Critic,
    critic_fake: Critic,
    real: Tensor,
    fake: Tensor,
    draws: Draws,
    r1_step: bool = False,
    scale: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """D's loss and stats. `critic_real` / `critic_fake` are D with the condition bound and the real / fake
    augmentation applied (GP's interpolates take the fake one); `scale`: the fp16 loss scale, or None."""
    d_loss, _ = get_adversarial(recipe.adversarial)
    if r1_step:
        r1, real_logits = r1_penalty(critic_real, real, scale)
    else:
        real_logits = critic_real(real)
    fake_logits = critic_fake(fake.detach())
    loss = d_loss(real_logits, fake_logits)
    stats = logit_stats(recipe.adversarial, real_logits, fake_logits)
    stats["real_sign"] = real_logits.detach().float().sign().mean()  # ADA's overfitting heuristic r_t
    if r1_step or recipe.gp_lambda > 0:
        stats["loss_d_adv"] = loss.detach()
    if r1_step:
        loss = loss + (recipe.r1_gamma / 2 * recipe.r1_every) * r1
        stats["r1"] = r1.detach()
    if recipe.gp_lambda > 0:
        gp = gradient_penalty(critic_fake, real, fake, draws["alpha"], scale)
        loss = loss + recipe.gp_lambda * gp
        stats["gp"] = gp.detach()
    stats["loss_d"] = loss.detach()
    return loss, stats


def g_objective(recipe: Recipe, critic_fake: Critic, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """G's adversarial loss (a family adds its own terms, e.g. pix2pix's L1) and stats."""
    _, g_loss = get_adversarial(recipe.adversarial)
    loss = g_loss(critic_fake(fake))
    return loss, {"loss_g": loss.detach()}


def logit_stats(adversarial: str, real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
    """What D says of real and fake images: D(x) and D(G(z)) as probabilities for bce (`d_real`, `d_fake`),
    the mean raw outputs for the other losses (`logit_real`, `logit_fake`), whose outputs are scores."""
    real, fake = real_logits.detach().float(), fake_logits.detach().float()
    if adversarial == "bce":
        return {"d_real": torch.sigmoid(real).mean(), "d_fake": torch.sigmoid(fake).mean()}
    return {"logit_real": real.mean(), "logit_fake": fake.mean()}
