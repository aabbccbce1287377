"""What a GAN family is to the trainer: its networks by name, the phases of its loss, and how it samples.

The trainer only ever talks to this interface (stylegan2-ada's `loss.py` idea: the loss object owns the
phases). A family declares its phases as data (`PhaseSpec`): which network each updates, which it reads
frozen, its loss, its interval (lazy regularisation: every k steps, weighted by k) and repeats. In a phase
the trainer switches every other network's parameters off (`requires_grad_(False)`) and hands in the
DDP-wrapped updated network and the frozen ones. So a family writes plain forward code and the right
gradients (and only those) are computed and all-reduced. The trainer knows networks only by the names a
family gives them; only families speak of "G" and "D".

The recipe (`loss.*`, `augment.*`: distgan/losses/recipe.py) is the same for every family. A family only
says what its generator makes from a batch (`fake`) and how D judges images given the batch's condition
(`critic`: D(x), D(x, label), D(source, x), with the augmentation applied to all D sees); the default
phases compose those with the recipe's adversarial loss, penalties and augmentation. A family overrides a
phase only to add its own terms (pix2pix's L1).

Batches are dicts: "image" (B, C, H, W) in [-1, 1] is always there; "label" (B,) int64 and "source"
(B, C, H, W) appear when a family lists them in `columns` (conditional and image-to-image families).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from distgan.config import ModelParams
from distgan.losses.penalties import Critic
from distgan.losses.recipe import Augment, PhaseContext, Recipe, d_objective, g_objective

if TYPE_CHECKING:
    from distgan.config import Config

Batch = dict[str, Tensor]
Stats = dict[str, Tensor]  # scalar tensors, kept on device; reduced across ranks only when logged
Networks = Mapping[str, Callable]  # what a phase's loss calls, by network name
PhaseLoss = Callable[[Networks, Batch, Tensor, PhaseContext], "tuple[Tensor, Stats]"]
ExtraDraws = Callable[[int, torch.Generator, torch.device], "dict[str, Tensor | dict[str, Tensor]]"]


@dataclass(frozen=True)
class PhaseSpec:
    """One phase of a family's loss, as data (stylegan2-ada's phase list).

    `loss(nets, batch, z, ctx)` gets the networks named in `updates` (DDP-wrapped) and `reads` (frozen, no
    DDP); it runs when `step % interval == 0`, `repeats` times (each an optimiser step on its own batches),
    and the trainer multiplies its loss by `interval` (a lazy regulariser's weight). `draws` says which of
    the recipe's random draws the phase takes ("critic": D's, "generator": G's, "none"); `lazy_r1` that the
    recipe's lazy R1 (`loss.r1_every`) counts this phase's steps. A phase with `batch_divisor` k > 1 draws
    and takes 1/k of each micro-batch's samples (StyleGAN2's pl_batch_shrink). `extra_draws(n, generator,
    device)` adds the family's own random inputs for a global batch of n (one row per sample), drawn after
    the latents and the recipe's draws and sliced per micro-batch like them (they reach the loss as
    `ctx.draws`), so 1 process and N processes draw the same. `double_backward`: the loss differentiates
    an input gradient (R1, path length): the phase runs eagerly and gets the fp16 loss scale (`ctx.scale`).
    """

    name: str
    updates: str
    loss: PhaseLoss
    reads: tuple[str, ...] = ()
    interval: int = 1
    repeats: int = 1
    draws: Literal["critic", "generator", "none"] = "none"
    lazy_r1: bool = False
    batch_divisor: int = 1
    extra_draws: ExtraDraws | None = None
    double_backward: bool = False


@dataclass(frozen=True)
class DataSpec:
    """What the data tells the networks: resolution, channels and (if labelled) the number of classes."""

    image_size: int
    channels: int
    num_classes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Family:
    """Base class of a GAN family; the defaults are an unconditional GAN with the non-saturating BCE loss.

    Subclasses set `name` and `Params`, build the two networks, and override the phases or sampling
    when their inputs differ (labels, source images).
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[ModelParams]] = ModelParams
    generator: ClassVar[str] = "G"  # the network that is sampled, averaged (EMA), evaluated and exported
    lr_keys: ClassVar[dict[str, str]] = {"G": "lr_g", "D": "lr_d"}  # network -> its train.* learning rate
    lazy_correction: ClassVar[bool] = False  # what train.lazy_correction: null resolves to
    columns: ClassVar[tuple[str, ...]] = ("image",)  # batch keys this family reads
    default_loss: ClassVar[str] = "bce"  # what loss.adversarial: null resolves to
    default_spectral_norm: ClassVar[str] = "none"  # what train.spectral_norm: null resolves to
    default_channels_last: ClassVar[bool] = True  # what train.channels_last: null resolves to

    def __init__(self, params: ModelParams, spec: DataSpec) -> None:
        self.params = params
        self.spec = spec
        self.columns = self.data_columns(params)

    @classmethod
    def data_columns(cls, params: ModelParams) -> tuple[str, ...]:
        """The batch keys these params read (a family conditional by config overrides this)."""
        return cls.columns

    @property
    def z_dim(self) -> int:
        """Length of the latent vector the trainer draws per sample (0: the family draws none)."""
        return int(getattr(self.params, "z_dim", 0))

    def build_generator(self) -> nn.Module:
        raise NotImplementedError

    def build_discriminator(self) -> nn.Module:
        raise NotImplementedError

    def build_networks(self) -> dict[str, nn.Module]:
        """Every network the phases train, by name (G first: the generator's initial weights are drawn first)."""
        return {"G": self.build_generator(), "D": self.build_discriminator()}

    def phases(self, cfg: Config) -> list[PhaseSpec]:
        """The phases in the order they run each step: D learns on the current G, then G on the updated D."""
        train = cfg.train
        return [
            PhaseSpec(
                "D",
                updates="D",
                reads=("G",),
                loss=lambda n, b, z, ctx: self.d_phase(n["G"], n["D"], b, z, ctx),
                repeats=train.d_steps,
                draws="critic",
                lazy_r1=True,
            ),
            PhaseSpec(
                "G",
                updates="G",
                reads=("D",),
                loss=lambda n, b, z, ctx: self.g_phase(n["G"], n["D"], b, z, ctx),
                draws="generator",
            ),
        ]

    def state_dict(self) -> dict[str, Tensor]:
        """Running state the phases keep besides the networks (checkpointed; StyleGAN2's path-length mean)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore `state_dict()`'s tensors; a family without running state takes none."""
        if state:
            raise ValueError(f"family {self.name} keeps no running state, got {sorted(state)}")

    # --- what the phases are made of ---------------------------------------------------------------
    def fake(self, G: nn.Module, batch: Batch, z: Tensor) -> Tensor:
        """G's images for this batch (B, C, H, W): from noise z (B, z_dim), and the batch's condition if any."""
        return G(z)

    def critic(self, D: nn.Module, batch: Batch, augment: Augment) -> Critic:
        """D as a function of images alone (B, C, H, W) -> logits, the batch's condition bound and `augment`
        applied to everything D sees (for a pair, to both images alike)."""
        return lambda x: D(augment(x))

    # --- the two phases: return (loss to minimise, stats) -------------------------------------------
    def d_phase(
        self, G: nn.Module, D: nn.Module, batch: Batch, z: Tensor, ctx: PhaseContext | None = None
    ) -> tuple[Tensor, Stats]:
        """D learns real -> real, G(z) -> fake with the recipe's loss and penalties. G is frozen here, so the
        fake images carry no graph; real and fake go through D in two passes (BN sees them apart)."""
        ctx = ctx or self.context()
        return d_objective(
            ctx.recipe,
            self.critic(D, batch, ctx.augment("real")),
            self.critic(D, batch, ctx.augment("fake")),
            batch["image"],
            self.fake(G, batch, z),
            ctx.draws,
            ctx.r1_step,
            ctx.scale,
        )

    def g_phase(
        self, G: nn.Module, D: nn.Module, batch: Batch, z: Tensor, ctx: PhaseContext | None = None
    ) -> tuple[Tensor, Stats]:
        """G learns to make D call G(z) real, with the recipe's G loss (bce: non-saturating)."""
        ctx = ctx or self.context()
        return g_objective(ctx.recipe, self.critic(D, batch, ctx.augment("fake")), self.fake(G, batch, z))

    def context(self) -> PhaseContext:
        """The phases' context outside the trainer: the family's default loss, no penalties or augmentation."""
        return PhaseContext(Recipe(adversarial=self.default_loss), {})

    # --- sampling --------------------------------------------------------------------------------------
    def sample_inputs(self, n: int, generator: torch.Generator, batch: Batch | None = None) -> dict[str, Tensor]:
        """Fixed inputs for the sample grid, deterministic for a given generator state.

        `batch` is a batch of real data (CPU) when the trainer has one; families whose generator needs
        data (a source image) take their inputs from it, others ignore it.
        """
        return {"z": torch.randn(n, self.z_dim, generator=generator)}

    def eval_inputs(self, indices: Tensor, seed: int, batch: Batch | None = None) -> dict[str, Tensor]:
        """Inputs for the evaluation samples with these global indices (N,): sample i is the same in any batch
        and on any number of processes (noise drawn from a generator seeded by (seed, i)).

        Families whose generator translates data read it from `batch` (the rows with these indices).
        """
        return {"z": torch.stack([torch.randn(self.z_dim, generator=g) for g in index_generators(indices, seed)])}

    def generate(self, G: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """Generated images in [-1, 1], (N, C, H, W), from `sample_inputs`-style inputs on G's device."""
        return G(inputs["z"])

    def panel(self, inputs: dict[str, Tensor], generated: Tensor) -> tuple[Tensor, int]:
        """What the logged grid shows, and images per row (default: the samples in a square grid)."""
        return generated, max(1, int(round(generated.shape[0] ** 0.5)))

    def walk_inputs(self, G: nn.Module, keys: dict[str, Tensor], t: Tensor) -> dict[str, Tensor]:
        """`generate` inputs for a latent walk through K keyframes (`keys`: sample inputs with K rows): for
        each of the K - 1 segments, the points at fractions t (T,) of the way, segment by segment ((K-1)*T
        rows). Default: slerp in z (a Gaussian's mass lies near a sphere; a straight line would cut inside
        it), each segment keeping its first keyframe's other inputs (its class)."""
        z = keys["z"]
        frames = slerp(z[:-1, None], z[1:, None], t.to(z)[None, :, None]).flatten(0, 1)
        rest = {k: v[:-1].repeat_interleave(len(t), 0) for k, v in keys.items() if k != "z"}
        return {"z": frames} | rest

    def num_styles(self) -> int:
        """How many style inputs (ws) G's synthesis takes; 0 when G has no style space. A family with styles
        honours a "truncation_psi" input in `generate` and implements `style_mix_inputs`."""
        return 0

    def style_mix_inputs(
        self, G: nn.Module, rows: dict[str, Tensor], cols: dict[str, Tensor], layers: range, psi: float = 1.0
    ) -> dict[str, Tensor]:
        """`generate` inputs for a style-mixing grid, row-major (R*C rows): row r's styles with the `layers`
        taken from column c's."""
        raise NotImplementedError(f"family {self.name} has no styles to mix")


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation from a to b (vectors in the last dimension) at fractions t; lerp where the two
    directions (nearly) coincide."""
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1).unsqueeze(-1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    near = sin.abs() < 1e-6
    sin = torch.where(near, torch.ones_like(sin), sin)
    wa = torch.where(near, 1 - t, torch.sin((1 - t) * omega) / sin)
    wb = torch.where(near, t, torch.sin(t * omega) / sin)
    return wa * a + wb * b


def index_generators(indices: Tensor, seed: int) -> list[torch.Generator]:
    """One CPU generator per global sample index, seeded by (seed, index)."""
    return [torch.Generator().manual_seed((seed << 32) ^ int(i) ^ 0x5EED_0000_0000_0000) for i in indices]
