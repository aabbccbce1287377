"""Adversarial objectives on D's logits: `loss.adversarial: bce | hinge | wgan | lsgan`.

Each objective is a pair (D loss of real and fake logits, G loss of fake logits), every term averaged over
all logits (one per image, or one per patch for a PatchGAN). Logits are cast to fp32 first, so the loss
is computed in full precision under autocast too.

- bce: the original GAN (Goodfellow et al., 2014) with the non-saturating G loss, on logits
  (BCE-with-logits is the seed's BCE(sigmoid(x)) in the numerically safe log-sum-exp form).
- hinge: SNGAN / BigGAN (Miyato et al., 2018; Brock et al., 2019): D = E relu(1 - D(x)) + E relu(1 + D(G(z))),
  G = -E D(G(z)).
- wgan: WGAN (Arjovsky et al., 2017), the critic of WGAN-GP (Gulrajani et al., 2017): D = E D(G(z)) - E D(x),
  G = -E D(G(z)); pair it with `loss.gp_lambda` (or spectral norm) to keep the critic Lipschitz.
- lsgan: least squares (Mao et al., 2017; pix2pix's `lsgan` option): D = E (D(x) - 1)^2 + E D(G(z))^2,
  G = E (D(G(z)) - 1)^2. Like `bce`, D's two terms are summed (Mao et al. halve both; Adam does not care).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distgan.errors import ConfigError

DLoss = Callable[[Tensor, Tensor], Tensor]
GLoss = Callable[[Tensor], Tensor]


def d_bce(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss: -log D(x) - log(1 - D(G(z))), each term averaged over its batch.

    -log sigmoid(x) = softplus(-x) and -log(1 - sigmoid(x)) = softplus(x): BCE-with-logits against all-ones
    and all-zeros targets, without building the target tensors (fewer kernels per step)."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def g_nonsaturating(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss: -log D(G(z)) = softplus(-D(G(z))) (maximise log D(G(z)) instead of
    minimising log(1 - D(G(z))))."""
    return F.softplus(-fake_logits.float()).mean()


def d_hinge(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge discriminator loss: E relu(1 - D(x)) + E relu(1 + D(G(z))); logits past the margin cost nothing."""
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def g_hinge(fake_logits: Tensor) -> Tensor:
    """Hinge generator loss: -E D(G(z)) (the same for wgan)."""
    return -fake_logits.float().mean()


def d_wgan(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Wasserstein critic loss: E D(G(z)) - E D(x) (the critic's estimate of the distance, negated)."""
    return fake_logits.float().mean() - real_logits.float().mean()


def d_lsgan(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Least-squares discriminator loss: E (D(x) - 1)^2 + E D(G(z))^2."""
    real, fake = real_logits.float(), fake_logits.float()
    return F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake))


def g_lsgan(fake_logits: Tensor) -> Tensor:
    """Least-squares generator loss: E (D(G(z)) - 1)^2."""
    fake = fake_logits.float()
    return F.mse_loss(fake, torch.ones_like(fake))


ADVERSARIAL: dict[str, tuple[DLoss, GLoss]] = {
    "bce": (d_bce, g_nonsaturating),
    "hinge": (d_hinge, g_hinge),
    "wgan": (d_wgan, g_hinge),
    "lsgan": (d_lsgan, g_lsgan),
}


def get_adversarial(name: str) -> tuple[DLoss, GLoss]:
    """(D loss, G loss) registered as `name`, or a ConfigError naming `loss.adversarial` and the choices."""
    if name not in ADVERSARIAL:
        raise ConfigError(f"loss.adversarial: unknown loss '{name}' (choose one of {', '.join(ADVERSARIAL)})")
    return ADVERSARIAL[name]
