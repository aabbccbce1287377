"""pix2pix (Isola et al., 2017): image-to-image translation with a U-Net G and a PatchGAN D.

G maps a source image to the target (labels -> photo, edges -> shoe, ...); D judges (source, image)
pairs patch by patch. G's loss is the adversarial term plus l1_weight * L1 to the target, which carries
the low frequencies, while the PatchGAN (70x70 receptive field at d_layers=3) only has to judge local
texture. Networks follow the paper and the official pytorch-CycleGAN-and-pix2pix `UnetGenerator` and
`NLayerDiscriminator` (same layers, biases and parameter counts: 54,413,955 and 2,768,705 at 256x256 RGB).

There is no latent vector (z_dim 0): as in the paper, the noise is dropout in G's decoder, and it stays
on when G is sampled in eval() mode (the paper applies dropout at test time). BatchNorm follows the
framework's convention instead: batch statistics while training, running statistics in eval().
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distgan.config import DataConfig, ModelParams, require_at_least_one, require_power_of_two_size
from distgan.errors import ConfigError, DistganError
from distgan.family import Batch, Family, Stats
from distgan.losses.penalties import Critic
from distgan.losses.recipe import Augment, PhaseContext, g_objective
from distgan.models.dcgan import dcgan_init
from distgan.registry import register_family

DROPOUT_BLOCKS = 3  # decoder blocks with dropout, counted from the bottleneck (the paper's CD512 x 3)


@dataclass
class Pix2PixParams(ModelParams):
    """pix2pix's model keys; the defaults are the paper's (unet_256 at 256x256, 70x70 PatchGAN, lambda 100)."""

    family: str = "pix2pix"
    ngf: int = 64  # G's width at full resolution; it doubles per level, capped at 8 * ngf
    ndf: int = 64  # D's first width; it doubles per layer, capped at 8 * ndf
    l1_weight: float = 100.0  # lambda: weight of L1(G(source), target) in G's loss
    dropout: float = 0.5  # in the first 3 decoder blocks, also at sampling time (G's only noise)
    d_layers: int = 3  # PatchGAN stride-2 layers: receptive field 70 at 3 (the paper's), 34 at 2, 16 at 1
    norm: Literal["batch", "instance", "none"] = "batch"  # batch: the paper's (batch 1 ~ instance norm)

    def validate(self, data: DataConfig) -> None:
        require_at_least_one(self, "model", ("ngf", "ndf", "d_layers"))
        if not self.l1_weight >= 0:
            raise ConfigError(f"model.l1_weight: must be >= 0, got {self.l1_weight}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        require_power_of_two_size(data, "pix2pix", " (U-Net depth)")
        size = data.image_size
        if size < patch_min_size(self.d_layers):
            raise ConfigError(
                f"model.d_layers: {self.d_layers} PatchGAN layers need data.image_size >= "
                f"{patch_min_size(self.d_layers)} (else no patch is left to judge), got {size}; lower model.d_layers"
            )


def patch_min_size(d_layers: int) -> int:
    """Smallest image side for which the PatchGAN still outputs a 1x1 map: size / 2^d_layers - 2 >= 1."""
    return 3 * 2**d_layers


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)  # affine=False, no running stats: as in the official code
    return nn.Identity()


class AlwaysDropout(nn.Module):
    """Dropout that stays on in eval(): pix2pix's noise source, applied at test time as in the paper."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}, also in eval"


class UNetGenerator(nn.Module):
    """source (B, C, S, S) -> U-Net with log2(S) stride-2 levels down to 1x1 and back -> Tanh -> (B, C, S, S).

    Encoder C64-C128-C256-C512-C512-... (Conv 4x4 s2, BN, LeakyReLU 0.2; no BN on the first and the
    innermost conv); decoder mirrors it with ReLU, ConvTranspose 4x4 s2, BN, and takes at every level the
    concatenation [encoder activation, decoder output] (the skip connections). Dropout in the first
    `DROPOUT_BLOCKS` decoder blocks. At S=256 this is the official `unet_256` (8 levels); the official
    code puts the dropout one block further out (blocks 2-4), the paper in blocks 1-3, as here.
    """

    def __init__(self, channels: int, ngf: int, size: int, norm: str = "batch", dropout: float = 0.5) -> None:
        super().__init__()
        depth = int(math.log2(size))  # stride-2 levels: S -> 1 at the bottleneck
        widths = [ngf * min(2**i, 8) for i in range(depth)]  # encoder outputs, e.g. 64,128,256,512,512,...
        bias = norm != "batch"  # BN's shift makes a conv bias redundant (the official use_bias)
        self.down = nn.ModuleList()
        for i, width in enumerate(widths):
            c_in = channels if i == 0 else widths[i - 1]
            innermost = i == depth - 1
            layers: list[nn.Module] = [nn.Conv2d(c_in, width, 4, 2, 1, bias=bias)]
            if 0 < i and not innermost:
                layers.append(_norm(norm, width))
            if not innermost:  # the activation is also what the skip connection carries
                layers.append(nn.LeakyReLU(0.2, True))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for j in range(depth):  # j = 0 at the bottleneck, depth - 1 at full resolution
            i = depth - 1 - j  # the encoder level this block mirrors
            c_in = widths[i] * (1 if j == 0 else 2)  # the bottleneck has no skip to concatenate
            if i == 0:  # outermost: back to image channels, with a bias, then Tanh
                layers = [nn.ReLU(True), nn.ConvTranspose2d(c_in, channels, 4, 2, 1), nn.Tanh()]
            else:
                layers = [nn.ReLU(True), nn.ConvTranspose2d(c_in, widths[i - 1], 4, 2, 1, bias=bias)]
                layers.append(_norm(norm, widths[i - 1]))
                if j < DROPOUT_BLOCKS and dropout > 0:
                    layers.append(AlwaysDropout(dropout))
            self.up.append(nn.Sequential(*layers))
        dcgan_init(self)  # the paper's init: conv N(0, 0.02), BN scale N(1, 0.02)

    def forward(self, source: Tensor) -> Tensor:
        skips: list[Tensor] = []
        h = source
        for block in self.down:
            h = block(h)
            skips.append(h)  # level i: (B, widths[i], S / 2^(i+1), S / 2^(i+1))
        skips.pop()  # the bottleneck (B, widths[-1], 1, 1) is the decoder's input, not a skip
        for block in self.up:
            h = block(h)
            if skips:
                h = torch.cat([skips.pop(), h], 1)  # (B, 2 * width, s, s): skip first, as in the official code
        return h  # (B, C, S, S) in [-1, 1]


class PatchDiscriminator(nn.Module):
    """(source, image) -> cat (B, 2C, S, S) -> PatchGAN -> per-patch logits (B, 1, S/2^n - 2, S/2^n - 2).

    C64-C128-C256-C512 (stride 2 for the first n layers, 1 for the last; no norm on the first) and a
    1-channel stride-1 conv: every logit sees a 70x70 patch at n = d_layers = 3 (256x256 -> 30x30 logits).
    """

    def __init__(self, in_channels: int, ndf: int, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last widening conv keeps the resolution
            layers += [nn.Conv2d(width, out, 4, stride, 1, bias=bias), _norm(norm, out), nn.LeakyReLU(0.2, True)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))  # logits, no Sigmoid
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, source: Tensor, image: Tensor) -> Tensor:
        return self.net(torch.cat([source, image], 1))


@register_family
class Pix2Pix(Family):
    """U-Net G on the source image, PatchGAN D on (source, image), the recipe's loss (BCE) + lambda * L1 (100).

    D's loss is halved as in the paper (0.5 * (BCE(real, 1) + BCE(fake, 0))); with penalties on, they are
    halved too. Adam is invariant to the loss scale (up to its epsilon), so this mainly makes loss_d
    comparable with the official code's logs.
    """

    name = "pix2pix"
    Params = Pix2PixParams
    columns = ("image", "source")  # "image" is the target

    def build_generator(self) -> nn.Module:
        p, s = self.params, self.spec
        return UNetGenerator(s.channels, p.ngf, s.image_size, p.norm, p.dropout)

    def build_discriminator(self) -> nn.Module:
        p, s = self.params, self.spec
        return PatchDiscriminator(2 * s.channels, p.ndf, p.d_layers, p.norm)

    def fake(self, G: nn.Module, batch: Batch, z: Tensor) -> Tensor:
        """G(source); z is (B, 0), unused (the U-Net's dropout is its noise)."""
        return G(batch["source"])

    def critic(self, D: nn.Module, batch: Batch, augment: Augment) -> Critic:
        """D(source, x) on every patch; an augmentation transforms the pair (source, x) alike."""
        source = batch["source"]

        def judge(x: Tensor) -> Tensor:
            s, t = augment([source, x])
            return D(s, t)

        return judge

    def d_phase(
        self, G: nn.Module, D: nn.Module, batch: Batch, z: Tensor, ctx: PhaseContext | None = None
    ) -> tuple[Tensor, Stats]:
        """The recipe's D loss, halved as in the paper (penalties included)."""
        loss, stats = super().d_phase(G, D, batch, z, ctx)
        loss = 0.5 * loss
        return loss, stats | {"loss_d": loss.detach()}

    def g_phase(
        self, G: nn.Module, D: nn.Module, batch: Batch, z: Tensor, ctx: PhaseContext | None = None
    ) -> tuple[Tensor, Stats]:
        """G learns to make D call its patches real (the recipe's G loss) and to stay close to the target in L1."""
        ctx = ctx or self.context()
        fake = self.fake(G, batch, z)
        adv, _ = g_objective(ctx.recipe, self.critic(D, batch, ctx.augment("fake")), fake)
        l1 = (fake.float() - batch["image"].float()).abs().mean()  # in fp32 under autocast too
        loss = adv + self.params.l1_weight * l1
        return loss, {"loss_g": loss.detach(), "loss_g_adv": adv.detach(), "l1": l1.detach()}

    def sample_inputs(self, n: int, generator: torch.Generator, batch: Batch | None = None) -> dict[str, Tensor]:
        """The first n (at most the batch size) sources and targets of a real batch; `generator` is unused."""
        if batch is None or "source" not in batch:
            raise DistganError("pix2pix samples need source images: use launch/sample.py --input FOLDER")
        return {"source": batch["source"][:n], "target": batch["image"][:n]}

    def eval_inputs(self, indices: Tensor, seed: int, batch: Batch | None = None) -> dict[str, Tensor]:
        """The rows' sources and targets: evaluation translates held-out sources and compares with targets."""
        if batch is None or "source" not in batch:
            raise DistganError("pix2pix evaluation needs source images from the data")
        return {"source": batch["source"], "target": batch["image"]}

    def generate(self, G: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """G(source): (N, C, H, W) in [-1, 1]; with dropout on, two calls give slightly different images."""
        return G(inputs["source"])

    def panel(self, inputs: dict[str, Tensor], generated: Tensor) -> tuple[Tensor, int]:
        """One row per example: source | generated | target (source | generated without a target)."""
        source = inputs["source"]
        columns = [source, generated.to(source.dtype)]
        if "target" in inputs:
            columns.append(inputs["target"])
        return torch.stack(columns, 1).flatten(0, 1), len(columns)  # (k * n, C, H, W), k per row
