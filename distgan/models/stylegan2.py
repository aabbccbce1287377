"""StyleGAN2 (Karras et al., 2020, "Analyzing and Improving the Image Quality of StyleGAN") as a family.

The networks (`stylegan2_networks.py`) take the official constructor keywords and have the official state
dicts; this file maps `model.*` onto those keywords and declares the four phases of the paper's loss, in the
official order:

    Gmain  every step        G: softplus(-D(G(z)))                      (non-saturating logistic)
    Greg   every pl_every    G: pl_weight * (|J_w^T y| - a)^2 on 1/pl_batch_shrink of the batch, y ~ N(0, I)/sqrt(HW)
    Dmain  every step        D: softplus(D(G(z))) + softplus(-D(x))
    Dreg   every r1_every    D: r1_gamma / 2 * ||grad_x D(x)||^2        (lazy R1, `loss.r1_gamma`, `loss.r1_every`)

The trainer weights each lazy phase by its interval and (train.lazy_correction, on for this family) corrects
its network's Adam for the extra steps. Every random input of a phase (the latents, the second latents and
crossover layer of style mixing, the per-layer noise, the path-length noise) is drawn by the trainer for the
whole global batch and sliced per sample (`PhaseSpec.extra_draws`), so 1 process and N processes, and a
resumed run, train on the same numbers. The path-length mean `a` and the mapping network's `w_avg` are updated
with means over all processes (the official code lets each GPU's copy drift), so every rank keeps the same.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distgan.config import DataConfig, ModelParams, require_in_range, require_power_of_two_size
from distgan.errors import ConfigError
from distgan.family import Batch, DataSpec, Family, Networks, PhaseSpec, Stats, index_generators
from distgan.losses.penalties import input_gradients
from distgan.losses.recipe import PhaseContext
from distgan.models.stylegan2_networks import Discriminator, Generator
from distgan.registry import register_family

if TYPE_CHECKING:
    from distgan.config import Config


@dataclass
class StyleGAN2Params(ModelParams):
    """stylegan2's config keys (`model.*`); resolution, channels and classes come from the data."""

    family: str = "stylegan2"
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8  # G's mapping network depth (the paper: 8; the CIFAR-10 setup: 2)
    mapping_lr: float = 0.01  # the mapping network's learning-rate multiplier
    channel_base: int = 32768  # widths: min(channel_base / resolution, channel_max) per block
    channel_max: int = 512
    num_fp16_res: int = 0  # the highest N resolutions run in fp16 on a GPU (with conv_clamp)
    conv_clamp: float | None = None  # clamp convolution outputs to +-this (the paper's fp16 setup: 256)
    g_architecture: Literal["orig", "skip", "resnet"] = "skip"
    d_architecture: Literal["orig", "skip", "resnet"] = "resnet"
    mbstd_group_size: int = 4  # minibatch standard deviation over groups of this many samples
    mbstd_num_channels: int = 1
    cmap_dim: int | None = None  # conditional D's projection width (null: D's last width)
    style_mixing_prob: float = 0.9  # share of samples whose ws switch to a second latent at a random layer
    pl_weight: float = 2.0  # path-length regularisation weight (0: off)
    pl_every: int = 4  # Greg's interval (lazy)
    pl_batch_shrink: int = 2  # Greg runs on 1/this of the batch
    pl_decay: float = 0.01  # the path-length mean's update rate
    conditional: bool = False  # condition G and D on the data's label column (data.label_column)
    init_from: str | None = None  # a folder of scripts/convert_stylegan2.py (G, D, G_ema weights) to start from

    def validate(self, data: DataConfig) -> None:
        """Ranges, and an image size the synthesis network can make (a power of two, at least 4)."""
        for key in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max"):
            require_in_range(self, "model", key, 1, 1 << 20)
        require_in_range(self, "model", "mapping_lr", 1e-6, 1)
        require_in_range(self, "model", "num_fp16_res", 0, 16)
        require_in_range(self, "model", "mbstd_group_size", 1, 1 << 16)
        require_in_range(self, "model", "mbstd_num_channels", 1, 1 << 10)
        require_in_range(self, "model", "style_mixing_prob", 0, 1)
        require_in_range(self, "model", "pl_weight", 0, 1e6)
        require_in_range(self, "model", "pl_every", 1, 1 << 16)
        require_in_range(self, "model", "pl_batch_shrink", 1, 1 << 16)
        require_in_range(self, "model", "pl_decay", 0, 1)
        if self.conv_clamp is not None:
            require_in_range(self, "model", "conv_clamp", 1e-3, 1e9, " (or null)")
        if self.cmap_dim is not None:
            require_in_range(self, "model", "cmap_dim", 1, 1 << 16, " (or null)")
        require_power_of_two_size(data, "stylegan2")
        if self.init_from is not None:
            folder = Path(self.init_from)
            missing = [f for f in ("config.json", "G.safetensors", "D.safetensors") if not (folder / f).is_file()]
            if missing:
                raise ConfigError(
                    f"model.init_from={self.init_from}: no {', '.join(missing)} there; make the folder with "
                    "python scripts/convert_stylegan2.py SNAPSHOT.pkl --out FOLDER"
                )

    def check_config(self, cfg: Config) -> None:
        """The batch must split into Greg's shrunk batch and D's minibatch-std groups; the loss is the
        paper's (non-saturating logistic, R1), so keys of other recipes are refused rather than ignored."""
        b = cfg.train.batch_size
        if self.pl_weight > 0 and b % self.pl_batch_shrink:
            raise ConfigError(
                f"train.batch_size={b}: must be a multiple of model.pl_batch_shrink={self.pl_batch_shrink} "
                "(path-length regularisation runs on 1/pl_batch_shrink of each per-process batch)"
            )
        group = min(self.mbstd_group_size, b)
        if b % group:
            raise ConfigError(
                f"train.batch_size={b}: must be a multiple of model.mbstd_group_size={self.mbstd_group_size} "
                "(D's minibatch standard deviation works on groups of that many samples)"
            )
        if cfg.loss.adversarial not in (None, "bce"):
            raise ConfigError(
                f"loss.adversarial={cfg.loss.adversarial}: stylegan2 trains with the non-saturating logistic "
                "loss of the paper; remove the key (or set bce)"
            )
        if cfg.loss.gp_lambda:
            raise ConfigError("loss.gp_lambda: stylegan2 regularises D with lazy R1; use loss.r1_gamma instead")
        if cfg.train.d_steps != 1:
            raise ConfigError(f"train.d_steps={cfg.train.d_steps}: stylegan2 alternates one D and one G step; set 1")


@register_family
class StyleGAN2(Family):
    """Mapping + synthesis G, resnet D, non-saturating logistic loss, lazy R1 and path-length regularisation."""

    name = "stylegan2"
    Params = StyleGAN2Params
    lazy_correction = True
    # modulated convolutions build per-sample weights: NHWC buys nothing, and DDP warns that the gradients'
    # layout differs from its NHWC buckets
    default_channels_last = False

    def __init__(self, params: StyleGAN2Params, spec) -> None:
        super().__init__(params, spec)
        self.pl_mean = torch.zeros(())  # the path-length mean `a` (checkpointed; equal on every rank)
        self.r1_gamma, self.r1_every = 0.0, 16

    @classmethod
    def data_columns(cls, params: StyleGAN2Params) -> tuple[str, ...]:  # type: ignore[override]
        return ("image", "label") if params.conditional else ("image",)

    @property
    def c_dim(self) -> int:
        return self.spec.num_classes or 0

    # --- networks ---------------------------------------------------------------------------------------
    def kwargs(self) -> tuple[dict, dict]:
        """The official constructor keywords (G_kwargs, D_kwargs) of these params and data."""
        p, s = self.params, self.spec
        G_kwargs = {
            "z_dim": p.z_dim,
            "c_dim": self.c_dim,
            "w_dim": p.w_dim,
            "img_resolution": s.image_size,
            "img_channels": s.channels,
            "mapping_kwargs": {"num_layers": p.mapping_layers, "lr_multiplier": p.mapping_lr, "w_avg_beta": 0.995},
            "synthesis_kwargs": {
                "channel_base": p.channel_base,
                "channel_max": p.channel_max,
                "num_fp16_res": p.num_fp16_res,
                "conv_clamp": p.conv_clamp,
                "architecture": p.g_architecture,
            },
        }
        D_kwargs = {
            "c_dim": self.c_dim,
            "img_resolution": s.image_size,
            "img_channels": s.channels,
            "architecture": p.d_architecture,
            "channel_base": p.channel_base,
            "channel_max": p.channel_max,
            "num_fp16_res": p.num_fp16_res,
            "conv_clamp": p.conv_clamp,
            "cmap_dim": p.cmap_dim,
            "epilogue_kwargs": {"mbstd_group_size": p.mbstd_group_size, "mbstd_num_channels": p.mbstd_num_channels},
        }
        return G_kwargs, D_kwargs

    def build_generator(self) -> nn.Module:
        return Generator(**self.kwargs()[0])

    def build_discriminator(self) -> nn.Module:
        return Discriminator(**self.kwargs()[1])

    def build_networks(self) -> dict[str, nn.Module]:
        """G and D; with model.init_from, holding a converted official snapshot's G and D weights."""
        nets = super().build_networks()
        if self.params.init_from is not None:
            load_converted(Path(self.params.init_from), nets, self.kwargs())
        return nets

    # --- the phases -------------------------------------------------------------------------------------
    def phases(self, cfg: Config) -> list[PhaseSpec]:
        """Gmain, Greg (if pl_weight > 0), Dmain, Dreg (if loss.r1_gamma > 0): the official order."""
        p = self.params
        self.r1_gamma, self.r1_every = cfg.loss.r1_gamma, cfg.loss.r1_every
        specs = [PhaseSpec("Gmain", "G", self.g_main, reads=("D",), draws="generator", extra_draws=self.g_draws)]
        if p.pl_weight > 0:
            specs.append(
                PhaseSpec(
                    "Greg",
                    "G",
                    self.g_reg,
                    interval=p.pl_every,
                    batch_divisor=p.pl_batch_shrink,
                    extra_draws=self.pl_draws,
                    double_backward=True,
                )
            )
        specs.append(PhaseSpec("Dmain", "D", self.d_main, reads=("G",), draws="critic", extra_draws=self.g_draws))
        if self.r1_gamma > 0:
            specs.append(
                PhaseSpec("Dreg", "D", self.d_reg, interval=self.r1_every, draws="critic", double_backward=True)
            )
        return specs

    def check_batch(self, batch_size: int) -> None:
        """Greg takes 1/pl_batch_shrink of each micro-batch: the batch must divide."""
        p = self.params
        if p.pl_weight > 0 and batch_size % p.pl_batch_shrink:
            raise ConfigError(
                f"train.batch_size={batch_size}: must be a multiple of model.pl_batch_shrink={p.pl_batch_shrink} "
                "(path-length regularisation runs on 1/pl_batch_shrink of each batch)"
            )

    def g_draws(self, n: int, gen: torch.Generator, device: torch.device) -> dict[str, Tensor | dict[str, Tensor]]:
        """A G pass's random inputs for n samples: style mixing (second latents, whether, from which layer)
        and the noise of every noise input (unit normal; the layers scale it by their learned strength)."""
        num_ws = self._num_ws()
        return {
            "mix_z": torch.randn(n, self.params.z_dim, generator=gen, device=device),
            "mix_u": torch.rand(n, generator=gen, device=device),
            "mix_layer": torch.randint(1, max(num_ws, 2), (n,), generator=gen, device=device),
            "noise": {
                name: torch.randn(n, 1, res, res, generator=gen, device=device) for name, res in self._noise_shapes()
            },
        }

    def pl_draws(self, n: int, gen: torch.Generator, device: torch.device) -> dict[str, Tensor | dict[str, Tensor]]:
        """Greg's inputs: a G pass's, then the path-length noise y (n, C, H, W), unit normal."""
        s = self.spec
        return self.g_draws(n, gen, device) | {
            "pl_noise": torch.randn(n, s.channels, s.image_size, s.image_size, generator=gen, device=device)
        }

    def run_G(self, G: nn.Module, z: Tensor, batch: Batch, ctx: PhaseContext) -> tuple[Tensor, Tensor]:
        """(images, ws) of a training pass: style mixing for `style_mixing_prob` of the samples, the drawn
        noise, and w_avg tracked with the mean over all processes."""
        d = ctx.draws
        mixing = d["mix_u"] < self.params.style_mixing_prob
        layer = torch.where(mixing, d["mix_layer"], torch.full_like(d["mix_layer"], self._num_ws()))
        return G(
            z,
            self._labels(batch, z),
            noise_mode="random",
            noise=d["noise"],
            mix_z=d["mix_z"] if self.params.style_mixing_prob > 0 else None,
            mix_layer=layer,
            w_mean=lambda w: ctx.global_mean(w.detach()),
            return_ws=True,
        )

    def g_main(self, nets: Networks, batch: Batch, z: Tensor, ctx: PhaseContext) -> tuple[Tensor, Stats]:
        """G makes D call its images real (non-saturating logistic loss)."""
        img, _ = self.run_G(nets["G"], z, batch, ctx)
        logits = nets["D"](ctx.augment("fake")(img), self._labels(batch, z))
        loss = F.softplus(-logits).mean()
        return loss, {"loss_g": loss.detach(), "d_fake_g": torch.sigmoid(logits.detach().float()).mean()}

    def g_reg(self, nets: Networks, batch: Batch, z: Tensor, ctx: PhaseContext) -> tuple[Tensor, Stats]:
        """Path-length regularisation: |J_w^T y| per sample should stay near its running mean."""
        img, ws = self.run_G(nets["G"], z, batch, ctx)
        y = ctx.draws["pl_noise"].to(img.dtype) / math.sqrt(img.shape[2] * img.shape[3])
        out = (img * y).sum()
        factor = None
        if ctx.scale is not None:  # fp16: start the backward at the loss scale (see penalties.input_gradients)
            factor = ctx.scale.reshape(()) / img.shape[0]
            out = out * factor
        (grad,) = torch.autograd.grad(out, ws, create_graph=True)
        grad = grad.float() if grad.dtype in (torch.float16, torch.bfloat16) else grad
        if factor is not None:
            grad = grad / factor
        lengths = grad.square().sum(2).mean(1).sqrt()  # (N,)
        mean = self.pl_mean.to(lengths).lerp(ctx.global_mean(lengths.mean()), self.params.pl_decay)
        self.pl_mean = mean.detach()
        penalty = (lengths - mean).square()
        # img * 0 keeps every G parameter in the graph (DDP waits for a gradient of each; toRGB's bias has none)
        loss = (penalty * self.params.pl_weight).mean() + img[:, 0, 0, 0].mean() * 0
        return loss, {"pl_penalty": penalty.detach().mean(), "pl_mean": mean.detach(), "loss_g_reg": loss.detach()}

    def d_main(self, nets: Networks, batch: Batch, z: Tensor, ctx: PhaseContext) -> tuple[Tensor, Stats]:
        """D calls real images real and G's images fake (G is frozen: its images carry no graph)."""
        c = self._labels(batch, z)
        img, _ = self.run_G(nets["G"], z, batch, ctx)
        fake = nets["D"](ctx.augment("fake")(img.detach()), c)
        real = nets["D"](ctx.augment("real")(batch["image"]), c)
        loss = F.softplus(fake).mean() + F.softplus(-real).mean()
        real32, fake32 = real.detach().float(), fake.detach().float()
        stats = {
            "loss_d": loss.detach(),
            "d_real": torch.sigmoid(real32).mean(),
            "d_fake": torch.sigmoid(fake32).mean(),
        }
        stats["real_sign"] = real32.sign().mean()  # ADA's overfitting heuristic r_t
        return loss, stats

    def d_reg(self, nets: Networks, batch: Batch, z: Tensor, ctx: PhaseContext) -> tuple[Tensor, Stats]:
        """Lazy R1 on real images: r1_gamma / 2 * E ||grad_x D(x)||^2."""
        c, augment = self._labels(batch, z), ctx.augment("real")
        x = batch["image"].detach().requires_grad_(True)
        grad, logits = input_gradients(lambda t: nets["D"](augment(t), c), x, ctx.scale)
        r1 = grad.square().flatten(1).sum(1).mean()
        loss = (self.r1_gamma / 2) * r1 + logits.mean() * 0  # logits * 0: D's last bias in the graph (DDP)
        return loss, {"r1": r1.detach(), "loss_d_reg": loss.detach()}

    # --- running state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        return {"pl_mean": self.pl_mean.detach().float().cpu().reshape(())} if self.params.pl_weight > 0 else {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        value = state.get("pl_mean")
        if value is None or value.numel() != 1 or not torch.isfinite(value).all() or value.item() < 0:
            raise ValueError(f"family_state: pl_mean must be one finite number >= 0, got {value}")
        self.pl_mean = value.reshape(()).clone()

    # --- sampling ---------------------------------------------------------------------------------------
    def sample_inputs(self, n: int, generator: torch.Generator, batch: Batch | None = None) -> dict[str, Tensor]:
        """n latents (and, conditional, the classes in rows as cgan lays them out)."""
        if not self.c_dim:
            return {"z": torch.randn(n, self.params.z_dim, generator=generator)}
        k = max(1, n // self.c_dim)
        z = torch.randn(k, self.params.z_dim, generator=generator)
        return {"z": z.repeat(self.c_dim, 1), "label": torch.arange(self.c_dim).repeat_interleave(k)}

    def eval_inputs(self, indices: Tensor, seed: int, batch: Batch | None = None) -> dict[str, Tensor]:
        """Per-index latents (and a uniformly drawn class when conditional), from the index's generator."""
        z, label = [], []
        for g in index_generators(indices, seed):
            z.append(torch.randn(self.params.z_dim, generator=g))
            if self.c_dim:
                label.append(torch.randint(self.c_dim, (), generator=g))
        return {"z": torch.stack(z)} | ({"label": torch.stack(label)} if self.c_dim else {})

    def generate(self, G: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """G(z, c) with constant noise (deterministic samples), truncated when inputs carry "truncation_psi";
        inputs with "ws" (walks, style mixing) go straight to the synthesis network."""
        if "ws" in inputs:
            return G.synthesis(inputs["ws"], noise_mode="const")
        z = inputs["z"]
        return G(z, self._labels(inputs, z), truncation_psi=self._psi(inputs), noise_mode="const")

    def walk_inputs(self, G: nn.Module, keys: dict[str, Tensor], t: Tensor) -> dict[str, Tensor]:
        """Linear in w (the mapping network's space is meant to be traversed linearly; the paper's
        perceptual path length measures it so)."""
        ws = G.mapping(keys["z"], self._labels(keys, keys["z"]), truncation_psi=self._psi(keys))
        t = t.to(ws)[None, :, None, None]
        return {"ws": torch.lerp(ws[:-1, None], ws[1:, None], t).flatten(0, 1)}

    def num_styles(self) -> int:
        return self._num_ws()

    def style_mix_inputs(
        self, G: nn.Module, rows: dict[str, Tensor], cols: dict[str, Tensor], layers: range, psi: float = 1.0
    ) -> dict[str, Tensor]:
        """Row r's ws with ws[layers] from column c (StyleGAN's figure: coarse layers carry pose and shape,
        fine ones colour)."""
        w_rows = G.mapping(rows["z"], self._labels(rows, rows["z"]), truncation_psi=psi)
        w_cols = G.mapping(cols["z"], self._labels(cols, cols["z"]), truncation_psi=psi)
        ws = w_rows[:, None].repeat(1, w_cols.shape[0], 1, 1)  # (R, C, num_ws, w_dim)
        ws[:, :, list(layers)] = w_cols[None, :, list(layers)]
        return {"ws": ws.flatten(0, 1)}

    def panel(self, inputs: dict[str, Tensor], generated: Tensor) -> tuple[Tensor, int]:
        """One class per row for conditional sample inputs; a square grid otherwise."""
        if self.c_dim and "label" in inputs and generated.shape[0] % self.c_dim == 0:
            return generated, generated.shape[0] // self.c_dim
        return super().panel(inputs, generated)

    # --- helpers ----------------------------------------------------------------------------------------
    def _labels(self, batch: Batch | dict[str, Tensor], z: Tensor) -> Tensor:
        """The one-hot condition c (N, c_dim); (N, 0) when unconditional, as the official networks take it."""
        if not self.c_dim:
            return z.new_zeros(z.shape[0], 0)
        return F.one_hot(batch["label"][: z.shape[0]], self.c_dim).to(z.dtype)

    @staticmethod
    def _psi(inputs: dict[str, Tensor]) -> float:
        return float(inputs["truncation_psi"]) if "truncation_psi" in inputs else 1.0

    def _num_ws(self) -> int:
        """ws per sample: one per convolution (1 at 4x4, 2 per higher resolution) and the last toRGB's."""
        return 2 * (int(math.log2(self.spec.image_size)) - 1)

    def _noise_shapes(self) -> list[tuple[str, int]]:
        """(noise input, resolution) in block order: b4.conv1, b8.conv0, b8.conv1, ... (the draws' order)."""
        shapes = [("b4.conv1", 4)]
        res = 8
        while res <= self.spec.image_size:
            shapes += [(f"b{res}.conv0", res), (f"b{res}.conv1", res)]
            res *= 2
        return shapes


def config_from_official(G_kwargs: dict, D_kwargs: dict) -> dict[str, dict]:
    """The `model.*` and `data.*` keys that make `StyleGAN2.kwargs()` equal these official keywords (the
    inverse of `kwargs`, e.g. for a converted snapshot's config.json); a keyword distgan does not set is an
    error naming it."""
    G, D = _norm(G_kwargs), _norm(D_kwargs)
    mapping, synthesis, epilogue = (
        G.get("mapping_kwargs", {}),
        G.get("synthesis_kwargs", {}),
        D.get("epilogue_kwargs", {}),
    )
    model = {
        "family": "stylegan2",
        "z_dim": G["z_dim"],
        "w_dim": G["w_dim"],
        "mapping_layers": mapping.get("num_layers", 8),
        "mapping_lr": mapping.get("lr_multiplier", 0.01),
        "channel_base": synthesis.get("channel_base", 32768),
        "channel_max": synthesis.get("channel_max", 512),
        "num_fp16_res": synthesis.get("num_fp16_res", 0),
        "conv_clamp": synthesis.get("conv_clamp"),
        "g_architecture": synthesis.get("architecture", "skip"),
        "d_architecture": D.get("architecture", "resnet"),
        "mbstd_group_size": epilogue.get("mbstd_group_size", 4),
        "mbstd_num_channels": epilogue.get("mbstd_num_channels", 1),
        "cmap_dim": D.get("cmap_dim"),
        "conditional": G.get("c_dim", 0) > 0,
    }
    data = {"image_size": G["img_resolution"], "channels": G["img_channels"]}
    data |= {"num_classes": G["c_dim"]} if G.get("c_dim", 0) > 0 else {}
    params = StyleGAN2Params(**model)
    mine = StyleGAN2(params, DataSpec(data["image_size"], data["channels"], data.get("num_classes"))).kwargs()
    for name, theirs, ours in (("G", G, _norm(mine[0])), ("D", D, _norm(mine[1]))):
        if theirs != ours:
            differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise ConfigError(f"official {name}_kwargs: {', '.join(differ)} not expressible as model.* keys")
    return {"model": model, "data": data}


def load_converted(folder: Path, nets: dict[str, nn.Module], kwargs: tuple[dict, dict]) -> None:
    """Load scripts/convert_stylegan2.py's G and D into `nets`, after checking that the snapshot's network
    keywords are these params' (a mismatch names the differing keys and what to set)."""
    from safetensors.torch import load_file

    recorded = json.loads((folder / "config.json").read_text())
    for name, mine in zip(("G", "D"), kwargs):
        theirs = recorded.get(f"{name}_kwargs", {})
        a, b = _norm(mine), _norm(theirs)
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if differ:
            detail = "; ".join(f"{k}: config {mine.get(k)!r}, snapshot {theirs.get(k)!r}" for k in differ)
            raise ConfigError(
                f"model.init_from={folder}: {name} differs from the snapshot's ({detail}); "
                "set model.* and data.* to the snapshot's network"
            )
        nets[name].load_state_dict(load_file(folder / f"{name}.safetensors"))


def _norm(value):
    """Keyword values compared as the official code defaults them (missing sub-keys equal their defaults)."""
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items() if v not in ({}, None)}
    return value
