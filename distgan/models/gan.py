"""The vanilla GAN (Goodfellow et al., 2014) as an MLP on flattened images (MNIST 28x28 in the seed)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from distgan.config import DataConfig, ModelParams, require_at_least_one
from distgan.errors import ConfigError
from distgan.family import Family
from distgan.registry import register_family


@dataclass
class GANParams(ModelParams):
    family: str = "gan"
    z_dim: int = 100
    hidden: int = 256  # width of G's first hidden layer; it doubles per layer (D mirrors G)
    depth: int = 3  # hidden layers in each network
    dropout: float = 0.3  # in D, as in the seed

    def validate(self, data: DataConfig) -> None:
        require_at_least_one(self, "model", ("z_dim", "hidden", "depth"))
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")


class MLPGenerator(nn.Module):
    """z (B, z_dim) -> Linear/LeakyReLU stack -> Tanh -> image (B, C, H, W)."""

    def __init__(self, z_dim: int, hidden: int, depth: int, channels: int, size: int) -> None:
        super().__init__()
        self.shape = (channels, size, size)
        widths = [z_dim] + [hidden * 2**i for i in range(depth)]
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], channels * size * size), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.flatten(1)).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    """image (B, C, H, W) -> Linear/LeakyReLU/Dropout stack -> one logit (B,)."""

    def __init__(self, hidden: int, depth: int, channels: int, size: int, dropout: float) -> None:
        super().__init__()
        widths = [channels * size * size] + [hidden * 2**i for i in reversed(range(depth))]
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(1)


@register_family
class GAN(Family):
    """MLP G and D, BCE, non-saturating G loss (the base Family's phases)."""

    name = "gan"
    Params = GANParams

    def build_generator(self) -> nn.Module:
        p, s = self.params, self.spec
        return MLPGenerator(p.z_dim, p.hidden, p.depth, s.channels, s.image_size)

    def build_discriminator(self) -> nn.Module:
        p, s = self.params, self.spec
        return MLPDiscriminator(p.hidden, p.depth, s.channels, s.image_size, p.dropout)
