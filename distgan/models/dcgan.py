"""DCGAN (Radford et al., 2015) as in the PyTorch faces example: 64x64x3 by default, any power of two >= 16."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from distgan.config import DataConfig, ModelParams, require_at_least_one, require_power_of_two_size
from distgan.family import Family
from distgan.registry import register_family


@dataclass
class DCGANParams(ModelParams):
    family: str = "dcgan"
    z_dim: int = 100
    ngf: int = 64  # G's width at the last (full-resolution) block; it doubles per block towards 4x4
    ndf: int = 64  # D's width at the first block
    norm: Literal["batch", "none"] = "batch"  # "none": BN-free variant (e.g. for exact DDP equivalence on CPU)

    def validate(self, data: DataConfig) -> None:
        require_at_least_one(self, "model", ("z_dim", "ngf", "ndf"))
        require_power_of_two_size(data, "dcgan")


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


class DCGenerator(nn.Module):
    """z (B, z_dim) -> (B, z_dim, 1, 1) -> ConvTranspose/BN/ReLU blocks (4x4 -> size) -> Tanh."""

    def __init__(self, z_dim: int, ngf: int, channels: int, size: int, norm: str = "batch") -> None:
        super().__init__()
        n_up = int(math.log2(size)) - 2  # stride-2 blocks from 4x4 to size x size
        width = ngf * 2 ** (n_up - 1)
        bias = norm != "batch"  # BN's shift makes a conv bias redundant (as in the seed)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, width, 4, 1, 0, bias=bias),
            _norm(norm, width),
            nn.ReLU(True),
        ]  # (B, ngf*2^(n_up-1), 4, 4)
        for _ in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=bias),
                _norm(norm, width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]  # (B, C, size, size)
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCDiscriminator(nn.Module):
    """image (B, C, size, size) -> Conv/(BN)/LeakyReLU(0.2) blocks down to 4x4 -> one logit (B,)."""

    def __init__(self, ndf: int, channels: int, size: int, norm: str = "batch") -> None:
        super().__init__()
        n_down = int(math.log2(size)) - 2
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=bias), nn.LeakyReLU(0.2, True)]  # no BN
        width = ndf
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=bias), _norm(norm, width * 2), nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]  # (B, 1, 1, 1): a logit, no Sigmoid
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's init: conv weights ~ N(0, 0.02), BN scale ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@register_family
class DCGAN(Family):
    """Convolutional G and D; the base Family's BCE / non-saturating phases."""

    name = "dcgan"
    Params = DCGANParams

    def build_generator(self) -> nn.Module:
        p, s = self.params, self.spec
        return DCGenerator(p.z_dim, p.ngf, s.channels, s.image_size, p.norm)

    def build_discriminator(self) -> nn.Module:
        p, s = self.params, self.spec
        return DCDiscriminator(p.ndf, s.channels, s.image_size, p.norm)
