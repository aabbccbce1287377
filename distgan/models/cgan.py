"""Conditional DCGAN (Mirza & Osindero, 2014, on DCGAN networks): both networks see the class as a one-hot.

G reads z concatenated with the one-hot class (the seed: 100 + 10 = 110 inputs for MNIST); D reads the image
with the one-hot broadcast to C constant feature maps (1 + 10 = 11 input channels). Everything else, the
conv stacks, their widths and the DCGAN init, is DCGAN's own code, fed wider inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distgan.config import DataConfig, ModelParams, require_at_least_one, require_power_of_two_size
from distgan.errors import ConfigError
from distgan.family import Batch, Family, index_generators
from distgan.losses.penalties import Critic
from distgan.losses.recipe import Augment
from distgan.models.dcgan import DCDiscriminator, DCGenerator
from distgan.registry import register_family


@dataclass
class CGANParams(ModelParams):
    """cgan's config keys (`model.*`); classes, image size and channels come from the data."""

    family: str = "cgan"
    z_dim: int = 100
    ngf: int = 64  # G's width at the last (full-resolution) block; it doubles per block towards 4x4
    ndf: int = 64  # D's width at the first block

    def validate(self, data: DataConfig) -> None:
        """Positive widths, a DCGAN-compatible image size, and a label column to condition on."""
        require_at_least_one(self, "model", ("z_dim", "ngf", "ndf"))
        require_power_of_two_size(data, "cgan")
        if not data.label_column:
            raise ConfigError("data.label_column: cgan is class-conditional; name the dataset's label column")


class CondGenerator(nn.Module):
    """(z (B, z_dim), label (B,) int64) -> [z, one_hot] (B, z_dim + C) -> DCGAN generator -> (B, C_img, S, S)."""

    def __init__(self, z_dim: int, num_classes: int, ngf: int, channels: int, size: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.body = DCGenerator(z_dim + num_classes, ngf, channels, size)  # viewed as (B, z_dim + C, 1, 1)

    def forward(self, z: Tensor, label: Tensor) -> Tensor:
        """Images in [-1, 1] (B, C_img, S, S) for noise z (B, z_dim) and classes label (B,) int64."""
        onehot = F.one_hot(label, self.num_classes).to(z.dtype)  # (B, C)
        return self.body(torch.cat([z, onehot], dim=1))


class CondDiscriminator(nn.Module):
    """(image (B, C_img, S, S), label (B,)) -> [image, one-hot maps] (B, C_img + C, S, S) -> DCGAN D -> (B,) logits."""

    def __init__(self, num_classes: int, ndf: int, channels: int, size: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.body = DCDiscriminator(ndf, channels + num_classes, size)

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        """One logit per image (B,): does x (B, C_img, S, S) look like a real image of class label (B,)?"""
        onehot = F.one_hot(label, self.num_classes).to(x.dtype)  # (B, C)
        maps = onehot[:, :, None, None].expand(-1, -1, *x.shape[-2:])  # (B, C, S, S): class c's map is all ones
        return self.body(torch.cat([x, maps], dim=1))


@register_family
class CGAN(Family):
    """Class-conditional DCGAN (the recipe's loss, BCE by default); samples are laid out one class per row."""

    name = "cgan"
    Params = CGANParams
    columns = ("image", "label")

    @property
    def num_classes(self) -> int:
        """Classes in the data (DataSpec.num_classes: data.num_classes or the label column's ClassLabel)."""
        if self.spec.num_classes is None:
            raise ConfigError("data.num_classes: cgan needs the number of classes (set it, or use a ClassLabel column)")
        return self.spec.num_classes

    def build_generator(self) -> nn.Module:
        """G(z, label): DCGAN's generator reading z_dim + C inputs."""
        p, s = self.params, self.spec
        return CondGenerator(p.z_dim, self.num_classes, p.ngf, s.channels, s.image_size)

    def build_discriminator(self) -> nn.Module:
        """D(x, label): DCGAN's discriminator reading channels + C input maps."""
        p, s = self.params, self.spec
        return CondDiscriminator(self.num_classes, p.ndf, s.channels, s.image_size)

    def fake(self, G: nn.Module, batch: Batch, z: Tensor) -> Tensor:
        """G(z, y) for the real batch's labels y: D sees the same class mix on both sides and can only tell
        real from fake by the images (and by whether an image fits its label)."""
        return G(z, batch["label"])

    def critic(self, D: nn.Module, batch: Batch, augment: Augment) -> Critic:
        """D(augment(x), y): the label is kept (R1 and GP take the gradient with respect to the image only)."""
        label = batch["label"]  # (B,) int64
        return lambda x: D(augment(x), label)

    def sample_inputs(self, n: int, generator: torch.Generator, batch: Batch | None = None) -> dict[str, Tensor]:
        """C rows of k = max(1, n // C) samples: row r is class r, column j is the same noise in every row.

        Returns C * k inputs (not always n); `batch` is ignored, the layout does not depend on the data.
        """
        classes, k = self.num_classes, max(1, n // self.num_classes)
        z = torch.randn(k, self.z_dim, generator=generator)  # (k, z_dim): one noise vector per column
        return {
            "z": z.repeat(classes, 1),  # (C*k, z_dim): row-major, so the columns repeat down the rows
            "label": torch.arange(classes).repeat_interleave(k),  # (C*k,): 0,..,0, 1,..,1, ...
        }

    def eval_inputs(self, indices: Tensor, seed: int, batch: Batch | None = None) -> dict[str, Tensor]:
        """Per-index noise and a uniformly drawn class, both from the index's generator (see Family)."""
        z, label = [], []
        for g in index_generators(indices, seed):
            z.append(torch.randn(self.z_dim, generator=g))
            label.append(torch.randint(self.num_classes, (), generator=g))
        return {"z": torch.stack(z), "label": torch.stack(label)}

    def generate(self, G: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """G(z, label) for `sample_inputs`-style inputs (or any "z" (N, z_dim) and "label" (N,) of equal N)."""
        return G(inputs["z"], inputs["label"])

    def panel(self, inputs: dict[str, Tensor], generated: Tensor) -> tuple[Tensor, int]:
        """One class per row (k per row) for `sample_inputs`' layout; any other labels: a square grid."""
        label, classes = inputs["label"], self.num_classes
        n = label.shape[0]
        k = n // classes
        layout = torch.arange(classes, device=label.device).repeat_interleave(k)
        if k and n % classes == 0 and torch.equal(label, layout):
            return generated, k
        return super().panel(inputs, generated)
