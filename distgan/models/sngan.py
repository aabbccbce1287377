"""SNGAN's ResNet networks for 32x32 (Miyato et al., 2018, Table 4; as StudioGAN's and Mimicry's SNGAN).

G: z (128) -> Linear -> (256, 4, 4) -> 3 up-blocks (BN, ReLU, nearest x2, conv3x3, BN, ReLU, conv3x3;
shortcut x2 + conv1x1) -> BN, ReLU, conv3x3 -> Tanh.
D: an "optimized" first block (conv3x3, ReLU, conv3x3, avg-pool; shortcut avg-pool + conv1x1), one down
block and two plain blocks (ReLU, conv3x3, ReLU, conv3x3 [, avg-pool]; a conv1x1 shortcut where the shape
changes), ReLU, global sum pooling, Linear -> one logit.
Init as the paper's code: Xavier-uniform with gain sqrt(2) on the residual convs, gain 1 elsewhere, zero
biases. Other powers of two keep the block widths and add or remove up/down blocks (D ends at 8x8).

Spectral norm and the hinge loss are the recipe, not the networks: the family declares them as its
defaults (`default_spectral_norm`, `default_loss`) and the trainer's wrapping step and loss choice apply
them, so `train.spectral_norm` and `loss.adversarial` can still switch them off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from distgan.config import DataConfig, ModelParams, require_at_least_one, require_power_of_two_size
from distgan.family import Family
from distgan.registry import register_family


@dataclass
class SNGANParams(ModelParams):
    """sngan's model keys; the defaults are the paper's CIFAR-10 networks."""

    family: str = "sngan"
    z_dim: int = 128
    ngf: int = 256  # width of every G block
    ndf: int = 128  # width of every D block

    def validate(self, data: DataConfig) -> None:
        require_at_least_one(self, "model", ("z_dim", "ngf", "ndf"))
        require_power_of_two_size(data, "sngan")


def _init(conv: nn.Module, gain: float) -> None:
    nn.init.xavier_uniform_(conv.weight, gain)
    nn.init.zeros_(conv.bias)


class GBlock(nn.Module):
    """(B, c_in, s, s) -> (B, c_out, 2s, 2s): BN, ReLU, up x2, conv3x3, BN, ReLU, conv3x3; + up x2, conv1x1."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)
        _init(self.conv1, math.sqrt(2))
        _init(self.conv2, math.sqrt(2))
        _init(self.shortcut, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """(B, c_in, s, s) -> (B, c_out, s/2 or s, ...): ReLU, conv3x3, ReLU, conv3x3, [avg-pool]; + shortcut.

    `first`: the "optimized" input block, which starts with the conv (no ReLU on the image) and pools
    before its shortcut conv. The shortcut is the identity where neither the width nor the size changes.
    """

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool = False) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if (down or c_in != c_out) else None
        _init(self.conv1, math.sqrt(2))
        _init(self.conv2, math.sqrt(2))
        if self.shortcut is not None:
            _init(self.shortcut, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x if self.first else F.relu(x))  # not in place: x is also the shortcut's input
        h = self.conv2(F.relu(h))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.shortcut is None:
            return h + x
        if self.first:
            return h + self.shortcut(F.avg_pool2d(x, 2))
        sc = self.shortcut(x)
        return h + (F.avg_pool2d(sc, 2) if self.down else sc)


class ResNetGenerator(nn.Module):
    """z (B, z_dim) -> (B, ngf, 4, 4) -> log2(size) - 2 up-blocks -> BN, ReLU, conv3x3, Tanh -> (B, C, size, size)."""

    def __init__(self, z_dim: int, ngf: int, channels: int, size: int) -> None:
        super().__init__()
        self.ngf = ngf
        self.linear = nn.Linear(z_dim, 4 * 4 * ngf)
        self.blocks = nn.Sequential(*[GBlock(ngf, ngf) for _ in range(int(math.log2(size)) - 2)])
        self.bn = nn.BatchNorm2d(ngf)
        self.out = nn.Conv2d(ngf, channels, 3, 1, 1)
        _init(self.linear, 1.0)
        _init(self.out, 1.0)

    def forward(self, z: Tensor) -> Tensor:
        h = self.linear(z).view(z.shape[0], self.ngf, 4, 4)
        return self.out(F.relu(self.bn(self.blocks(h)))).tanh()


class ResNetDiscriminator(nn.Module):
    """image (B, C, size, size) -> down-blocks to 8x8 -> 2 plain blocks -> ReLU, sum over H, W -> Linear -> (B,)."""

    def __init__(self, ndf: int, channels: int, size: int) -> None:
        super().__init__()
        n_down = int(math.log2(size)) - 3  # 32x32: two (the optimized block and one more), ending at 8x8
        blocks = [DBlock(channels, ndf, down=True, first=True)]
        blocks += [DBlock(ndf, ndf, down=True) for _ in range(n_down - 1)]
        blocks += [DBlock(ndf, ndf, down=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(ndf, 1)
        _init(self.linear, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # (B, ndf): global sum pooling
        return self.linear(h).flatten()  # (B,) logits


@register_family
class SNGAN(Family):
    """ResNet G and D of SNGAN; the recipe (hinge loss, spectral norm on D) is declared, the trainer applies it.

    `default_loss` and `default_spectral_norm` are what `loss.adversarial: null` and
    `train.spectral_norm: null` resolve to for this family (the base Family: "bce" and "none").
    """

    name = "sngan"
    Params = SNGANParams
    default_loss = "hinge"
    default_spectral_norm = "D"

    def build_generator(self) -> nn.Module:
        p, s = self.params, self.spec
        return ResNetGenerator(p.z_dim, p.ngf, s.channels, s.image_size)

    def build_discriminator(self) -> nn.Module:
        p, s = self.params, self.spec
        return ResNetDiscriminator(p.ndf, s.channels, s.image_size)
