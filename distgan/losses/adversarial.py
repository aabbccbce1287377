"""The original GAN objective on logits.

BCE-with-logits is the seed's BCE(sigmoid(x)) written in the numerically safe form (log-sum-exp), which
also stays in fp32 under autocast.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def d_bce(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss: -log D(x) - log(1 - D(G(z))), each term averaged over its batch."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_nonsaturating(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss: -log D(G(z)) (maximise log D(G(z)) instead of min log(1 - D))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
