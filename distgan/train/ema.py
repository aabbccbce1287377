"""An exponential moving average of the generator's weights (StyleGAN2's G_ema).

The half-life is counted in images, not steps (`train.ema_kimg` thousand images), so it means the same at
any batch size or number of processes; `train.ema_rampup` shortens it early in training to
`images_seen * ema_rampup` (StyleGAN2-ADA's ramp-up) so that the average does not drag the random
initial weights along for the first half-life. BatchNorm running statistics and other buffers are copied
from G after every update: an average of running statistics would not match the averaged weights either,
and copying is what StyleGAN2 does.

The update is one multi-tensor lerp with a decay computed on the host from host-side counters: no host
synchronisation, no graph. Every rank holds the same G after its step, so every rank's EMA is the same.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch_images: int, images_seen: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """Decay of one update after `batch_images` more images: 0.5 ** (batch / half-life in images)."""
    half_life = ema_kimg * 1000
    if ema_rampup is not None:
        half_life = min(half_life, images_seen * ema_rampup)
    return 0.5 ** (batch_images / max(half_life, 1e-8))


class EMA:
    """A frozen copy of G whose parameters follow G's as an exponential moving average."""

    def __init__(self, G: nn.Module, ema_kimg: float, ema_rampup: float | None) -> None:
        self.ema_kimg, self.ema_rampup = ema_kimg, ema_rampup
        self.module = copy.deepcopy(G).eval().requires_grad_(False)
        self._pairs = list(zip(self.module.parameters(), G.parameters(), strict=True))
        self._buffers = list(zip(self.module.buffers(), G.buffers(), strict=True))

    @torch.no_grad()
    def update(self, batch_images: int, images_seen: int) -> None:
        """After a G step: ema = lerp(G, ema, beta) for parameters; buffers copied from G.

        `batch_images`: images of this optimiser step (all processes); `images_seen`: the total after it.
        """
        beta = ema_beta(batch_images, images_seen, self.ema_kimg, self.ema_rampup)
        ema = [e for e, _ in self._pairs]
        torch._foreach_lerp_(ema, [p.detach() for _, p in self._pairs], 1.0 - beta)  # ema += (1-b)(p-ema)
        for e, b in self._buffers:
            e.copy_(b)
