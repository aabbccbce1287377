"""Adaptive discriminator augmentation (Karras et al., 2020, "Training Generative Adversarial Networks with
Limited Data", NeurIPS; arXiv:2006.06676).

Every image D sees, real and generated, goes through the same random, differentiable pipeline; each
transform is applied to a sample with probability p, and `AdaController` tunes p during training from the
overfitting heuristic r_t = E[sign(D(real))] (p rises while r_t > target, falls while below).

The pipeline is the paper's "bgc" (groups in this order; images in [-1, 1], sizes relative to the side):

- b (pixel blitting): x-flip (a fair coin), 90-degree rotation (k uniform in 0..3), integer translation
  (uniform in +-0.125 of the side per axis, rounded to pixels); exact pixel moves, reflection at the border;
- g (general geometric): isotropic scaling 2^N(0, 0.2^2) (lognormal, std 0.2 ln 2), pre-rotation uniform in
  [-pi, pi], anisotropic scaling 2^N(0, 0.2^2) along x (1/s along y), post-rotation uniform in [-pi, pi],
  fractional translation N(0, 0.125^2) per axis; composed into one affine map per sample and resampled once
  (bilinear, reflection padding; no anti-aliasing filter). Each rotation is applied with probability
  1 - sqrt(1 - p), so that "any rotation" has probability p, as in the paper;
- c (color): brightness + N(0, 0.2^2), contrast x 2^N(0, 0.5^2), luma flip (a fair coin: a reflection of
  the color about the grey axis), hue rotation about the grey axis uniform in [-pi, pi], saturation
  x 2^N(0, 1) around the grey axis; composed into one 4x4 homogeneous color matrix per sample. Grayscale
  (C = 1) images get brightness, contrast and luma flip (which there negates the value) only.

Randomness is split from the transform, as in `distgan.augment.diffaugment`: `sample_params` draws a
whole global batch's parameters from one generator (the same draws whatever p is: p only sets the masks
u < p), a trainer takes its micro-batch's rows out of them (`diffaugment.slice_params` or any row
indexing), and `apply` transforms. A sample's output depends only on its own parameter rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distgan.errors import ConfigError, DistganError

GROUPS = ("b", "g", "c")  # blit, geom, color
GROUP_NAMES = {"b": "blit", "g": "geom", "c": "color"}
INT_SHIFT_MAX = 0.125  # integer translation: uniform in +- this fraction of the side
SCALE_STD = 0.2  # log2 std of isotropic and anisotropic scaling
FRAC_SHIFT_STD = 0.125  # fractional translation std, as a fraction of the side
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5  # log2
SATURATION_STD = 1.0  # log2

Params = dict[str, Tensor]  # each (N, ...) with one row per sample

# The keys of each group in `Params` (present only for the groups of the pipeline).
BLIT_KEYS = ("xflip", "rot90", "int_shift")
GEOM_KEYS = ("scale", "pre_rot", "aniso", "post_rot", "frac_shift")
COLOR_KEYS = ("brightness", "contrast", "lumaflip", "hue", "saturation")


def parse_pipeline(pipeline: str) -> tuple[str, ...]:
    """The groups of a pipeline such as "bgc", "bg" or "c", in the paper's order; an unknown letter is a ConfigError."""
    for ch in pipeline:
        if ch not in GROUPS:
            raise ConfigError(
                f"augment.ada_pipeline: unknown group '{ch}' in '{pipeline}' (choose letters from b (blit), "
                "g (geom), c (color), e.g. 'bgc')"
            )
    return tuple(g for g in GROUPS if g in pipeline)


def sample_params(
    p: float,
    n: int,
    size: tuple[int, int],
    generator: torch.Generator,
    device: torch.device | str,
    pipeline: str = "bgc",
) -> Params:
    """Augmentation parameters of n samples of images of `size` (H, W), each transform applied with probability p.

    Row i of every tensor is sample i. The same numbers are drawn from `generator` for every p (in a fixed
    order: per group, one uniform (n, 7) draw, then one normal draw), so the generator's state afterwards and
    the unmasked values do not depend on p. Values are in pixels and radians, identity where not applied.
    `p` is also kept as a CPU tensor row per sample ("p"), so that `apply` sees p = 0 without a host sync.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"ada.sample_params: p must be a number in [0, 1], got {p!r}")
    groups = parse_pipeline(pipeline)
    h, w = size
    p = float(p)
    p_rot = 1.0 - math.sqrt(1.0 - p)  # P(pre or post rotation) = p
    params: Params = {"p": torch.full((n,), p, dtype=torch.float64)}
    for group in groups:
        u = torch.rand(n, 7, generator=generator, device=device)
        if group == "b":
            on_flip, on_rot, on_shift = u[:, 0] < p, u[:, 2] < p, u[:, 4] < p
            flip = (u[:, 1] * 2).floor().clamp(max=1).long()
            rot = (u[:, 3] * 4).floor().clamp(max=3).long()
            extent = torch.tensor([w, h], device=device, dtype=u.dtype) * INT_SHIFT_MAX
            shift = ((u[:, 5:7] * 2 - 1) * extent).round().long()  # (n, 2): x, y in pixels
            params["xflip"] = flip * on_flip
            params["rot90"] = rot * on_rot
            params["int_shift"] = shift * on_shift[:, None]
        elif group == "g":
            z = torch.randn(n, 4, generator=generator, device=device)
            one, zero = torch.ones_like(z[:, 0]), torch.zeros_like(z[:, 0])
            params["scale"] = torch.where(u[:, 0] < p, torch.exp2(z[:, 0] * SCALE_STD), one)
            params["pre_rot"] = torch.where(u[:, 1] < p_rot, (u[:, 2] * 2 - 1) * math.pi, zero)
            params["aniso"] = torch.where(u[:, 3] < p, torch.exp2(z[:, 1] * SCALE_STD), one)
            params["post_rot"] = torch.where(u[:, 4] < p_rot, (u[:, 5] * 2 - 1) * math.pi, zero)
            extent = torch.tensor([w, h], device=device, dtype=z.dtype) * FRAC_SHIFT_STD
            params["frac_shift"] = z[:, 2:4] * extent * (u[:, 6:7] < p)  # (n, 2): x, y in pixels
        else:
            z = torch.randn(n, 3, generator=generator, device=device)
            one, zero = torch.ones_like(z[:, 0]), torch.zeros_like(z[:, 0])
            params["brightness"] = torch.where(u[:, 0] < p, z[:, 0] * BRIGHTNESS_STD, zero)
            params["contrast"] = torch.where(u[:, 1] < p, torch.exp2(z[:, 1] * CONTRAST_STD), one)
            params["lumaflip"] = torch.where(u[:, 2] < p, (u[:, 3] * 2).floor().clamp(max=1), zero)
            params["hue"] = torch.where(u[:, 4] < p, (u[:, 5] * 2 - 1) * math.pi, zero)
            params["saturation"] = torch.where(u[:, 6] < p, torch.exp2(z[:, 2] * SATURATION_STD), one)
    return params


def apply(x: Tensor, params: Params) -> Tensor:
    """Augment images x (N, C, H, W) in [-1, 1] with `params` (N rows), differentiably w.r.t. x.

    Groups run in the order blit, geom, color, those whose keys are in `params`. At p = 0 (or when no
    transform is on for any sample) this returns `x` itself. The result has x's dtype; half-precision
    inputs are computed in float32 (autocast is turned off inside). A group is skipped when no sample uses
    it if that is known without a host sync (parameters on the CPU); otherwise it runs and samples that
    do not use it keep their input exactly, so a sample's output never depends on the rest of the batch.
    """
    if "p" in params and params["p"].device.type == "cpu" and not bool((params["p"] > 0).any()):
        return x  # p = 0: nothing is on
    if x.ndim != 4:
        raise ValueError(f"ada.apply: expected images (N, C, H, W), got shape {tuple(x.shape)}")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    out = x
    with torch.autocast(device_type=x.device.type, enabled=False):
        if "xflip" in params:
            on = (params["xflip"] != 0) | (params["rot90"] != 0) | (params["int_shift"] != 0).any(1)
            if _maybe_any(on):
                out = _blit(out, params["xflip"], params["rot90"], params["int_shift"])
        if "scale" in params:
            scale, pre, aniso, post, shift = (params[k].to(dtype) for k in GEOM_KEYS)
            on = (scale != 1) | (pre != 0) | (aniso != 1) | (post != 0) | (shift != 0).any(1)
            if _maybe_any(on):
                y = out.to(dtype)
                out = torch.where(on.view(-1, 1, 1, 1), _geom(y, scale, pre, aniso, post, shift), y)
        if "brightness" in params:
            b, c, flip, hue, sat = (params[k].to(dtype) for k in COLOR_KEYS)
            on = (b != 0) | (c != 1) | (flip != 0)
            if out.shape[1] != 1:
                on = on | (hue != 0) | (sat != 1)  # hue and saturation mean nothing for grayscale
            if _maybe_any(on):
                y = out.to(dtype)
                out = torch.where(on.view(-1, 1, 1, 1), _color(y, b, c, flip, hue, sat), y)
    return out if out is x else out.to(x.dtype)


def _maybe_any(on: Tensor) -> bool:
    """Whether any sample is on; True on an accelerator, where asking would sync the host."""
    return bool(on.any()) if on.device.type == "cpu" else True


def _reflect(i: Tensor, n: int) -> Tensor:
    """Integer indices folded into [0, n) by mirroring about the first and last pixel (F.pad's 'reflect')."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def _blit(x: Tensor, flip: Tensor, rot: Tensor, shift: Tensor) -> Tensor:
    """out = translate(rot90(xflip(x))), as one gather of source pixels (exact; reflection at the border).

    rot90 by k turns like torch.rot90(x, k, dims=(2, 3)); the translation moves content by +shift (x, y).
    """
    n, c, h, w = x.shape
    dev = x.device
    # Output pixel centres relative to the image centre, doubled to stay integer: (1, H, 1) and (1, 1, W).
    i32 = torch.int32  # index arithmetic in int32 (faster than int64; sides are far below 2^15)
    ys = (2 * torch.arange(h, device=dev, dtype=i32) - (h - 1)).view(1, h, 1)
    xs = (2 * torch.arange(w, device=dev, dtype=i32) - (w - 1)).view(1, 1, w)
    xs = xs - 2 * shift[:, 0].to(i32).view(n, 1, 1)  # undo the translation
    ys = ys - 2 * shift[:, 1].to(i32).view(n, 1, 1)
    cos = torch.tensor([1, 0, -1, 0], device=dev, dtype=i32)[rot].view(n, 1, 1)
    sin = torch.tensor([0, 1, 0, -1], device=dev, dtype=i32)[rot].view(n, 1, 1)
    xs, ys = cos * xs - sin * ys, sin * xs + cos * ys  # undo the rotation
    xs = xs * (1 - 2 * flip.to(i32).view(n, 1, 1))  # undo the flip
    cols = _reflect(torch.div(xs + (w - 1), 2, rounding_mode="floor"), w)
    rows = _reflect(torch.div(ys + (h - 1), 2, rounding_mode="floor"), h)
    index = (rows * w + cols).long().view(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    """Batched small matrix product as an elementwise sum (exact for identities, never TF32)."""
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)


def _rot2(theta: Tensor) -> Tensor:
    """(N, 2, 2) rotations by theta in pixel coordinates (x right, y down)."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def _diag2(a: Tensor, b: Tensor) -> Tensor:
    zero = torch.zeros_like(a)
    return torch.stack([torch.stack([a, zero], -1), torch.stack([zero, b], -1)], -2)


def _geom(x: Tensor, scale: Tensor, pre: Tensor, aniso: Tensor, post: Tensor, shift: Tensor) -> Tensor:
    """Resample x once through forward map T(shift) R(post) A(aniso) R(pre) S(scale) about the image centre."""
    n, _, h, w = x.shape
    # The inverse (output -> input) linear part, then input = inv @ (output - shift), in pixels.
    inv = _matmul(_diag2(1 / scale, 1 / scale), _rot2(-pre))
    inv = _matmul(inv, _diag2(1 / aniso, aniso))
    inv = _matmul(inv, _rot2(-post))
    offset = -(inv * shift.unsqueeze(-2)).sum(-1)  # (N, 2): -inv @ shift
    # grid_sample's coordinates are pixel / (side / 2) (align_corners=False), so rescale the map to them.
    a, b, c, d = inv[:, 0, 0], inv[:, 0, 1] * (h / w), inv[:, 1, 0] * (w / h), inv[:, 1, 1]
    tx, ty = offset[:, 0] * (2 / w), offset[:, 1] * (2 / h)
    a, b, c, d, tx, ty = (t.view(n, 1, 1) for t in (a, b, c, d, tx, ty))
    gx = ((torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1).view(1, 1, w)  # pixel centres
    gy = ((torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1).view(1, h, 1)
    grid = torch.stack([a * gx + b * gy + tx, c * gx + d * gy + ty], -1)  # (N, H, W, 2): input x, y
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _color(x: Tensor, b: Tensor, c: Tensor, flip: Tensor, hue: Tensor, sat: Tensor) -> Tensor:
    """Color matrix S(sat) H(hue) L(flip) C(contrast) B(brightness) per sample (brightness first)."""
    n, ch = x.shape[:2]
    if ch == 1:
        # The grey axis maps to itself: brightness, contrast, then the flip negates.
        return x * ((1 - 2 * flip) * c).view(n, 1, 1, 1) + ((1 - 2 * flip) * c * b).view(n, 1, 1, 1)
    if ch != 3:
        raise ValueError(f"ada.apply: color transforms need 1 or 3 channels, got {ch}")
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    v = torch.full((3,), 1 / math.sqrt(3), dtype=x.dtype, device=x.device)  # unit grey axis
    vv = torch.outer(v, v)
    k = torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=x.dtype, device=x.device) / math.sqrt(3)
    flip, hue, sat, c3 = (t.view(n, 1, 1) for t in (flip, hue, sat, c))
    luma = eye - 2 * flip * vv  # Householder reflection about the plane normal to the grey axis
    rot = eye + torch.sin(hue) * k + (1 - torch.cos(hue)) * _matmul(k, k)  # Rodrigues: about the grey axis
    satm = eye + (sat - 1) * (eye - vv)  # scales the part orthogonal to the grey axis
    m = _matmul(_matmul(satm, rot), luma) * c3  # (N, 3, 3); brightness is a shift before it
    off = m.sum(-1) * b.view(n, 1)  # (N, 3): m @ (b, b, b)
    out = [sum(m[:, r, j].view(n, 1, 1) * x[:, j] for j in range(3)) + off[:, r].view(n, 1, 1) for r in range(3)]
    return torch.stack(out, 1)


class AdaController:
    """The augmentation probability p, adjusted from D's outputs on reals (the paper's r_t heuristic).

    Call `accumulate(d_real_logits)` on each D step's real logits, or `accumulate_mean(sign_mean)` with
    their mean sign (device tensors, no host sync), and `update(images_per_step, reduce)` once per training
    step (`observe` does both with a step's stats, as the trainer runs it); every `interval` steps it sums the statistic
    across processes with `reduce`, sets r_t = E[sign(logits)] and moves p by sign(r_t - target) times the
    images seen since the last update over (kimg * 1000), clamped to [0, 1]. `fixed=True` keeps p constant
    (r_t is still measured and reported).
    """

    def __init__(
        self,
        p: float = 0.0,
        target: float = 0.6,
        interval: int = 4,
        kimg: float = 500.0,
        fixed: bool = False,
        device: torch.device | str = "cpu",
        pipeline: str = "bgc",
    ) -> None:
        _check_number("augment.ada_p", p, 0.0, 1.0, ConfigError)
        _check_number("augment.ada_target", target, -1.0, 1.0, ConfigError)
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"augment.ada_interval: must be an integer >= 1, got {interval!r}")
        if isinstance(kimg, bool) or not isinstance(kimg, (int, float)) or not 0 < kimg < math.inf:
            raise ConfigError(f"augment.ada_kimg: must be a number > 0, got {kimg!r}")
        self.p = float(p)
        self.target = float(target)
        self.interval = interval
        self.kimg = float(kimg)
        self.fixed = bool(fixed)
        self.pipeline = "".join(parse_pipeline(pipeline))
        self._sum = torch.zeros((), dtype=torch.float32, device=device)  # sum of sign(D(real)) since the update
        self._count = torch.zeros((), dtype=torch.float32, device=device)  # how many logits that was
        self._images = 0  # images seen since the last update (all processes)
        self._steps = 0  # update() calls since the last update

    def accumulate(self, d_real_logits: Tensor) -> None:
        """Add a batch of D's logits on real images to the statistic (on their device, no host sync)."""
        logits = d_real_logits.detach()
        if self._sum.device != logits.device:  # first use: move the accumulators to the logits' device
            self._sum, self._count = self._sum.to(logits.device), self._count.to(logits.device)
        self._sum += logits.sign().sum(dtype=torch.float32)
        self._count += logits.numel()

    def accumulate_mean(self, sign_mean: Tensor) -> None:
        """Add one process's E[sign(D(real))] over one D step's batch, weighted as one batch (batches are equal)."""
        if self._sum.device != sign_mean.device:
            self._sum, self._count = self._sum.to(sign_mean.device), self._count.to(sign_mean.device)
        self._sum += sign_mean.detach().float().reshape(())
        self._count += 1

    def observe(self, stats: dict[str, Tensor], images_per_step: int, reduce: Callable[[Tensor], Tensor]):
        """One training step: its D phase's `real_sign` stat (when it ran), then `update`; returns what
        `update` returns."""
        if "real_sign" in stats:
            self.accumulate_mean(stats["real_sign"])
        return self.update(images_per_step, reduce)

    def update(self, images_per_step: int, reduce: Callable[[Tensor], Tensor]) -> dict[str, float] | None:
        """Count one training step of `images_per_step` images (the global batch, all processes); every
        `interval` steps adjust p and return {"ada_p": p, "ada_rt": r_t}, else None.

        `reduce` sums a tensor across processes (e.g. `lambda t: accelerator.reduce(t, "sum")`); every process
        must call this on the same steps. It syncs the host once per update. With no logits accumulated
        since the last update r_t is nan and p stays.
        """
        self._images += int(images_per_step)
        self._steps += 1
        if self._steps < self.interval:
            return None
        total, count = reduce(torch.stack([self._sum, self._count])).tolist()  # the host sync of the update
        rt = total / count if count > 0 else math.nan
        if not self.fixed and count > 0:
            step = math.copysign(1.0, rt - self.target) if rt != self.target else 0.0
            self.p = min(max(self.p + step * self._images / (self.kimg * 1000), 0.0), 1.0)
        self._sum.zero_()
        self._count.zero_()
        self._images = 0
        self._steps = 0
        return {"ada_p": self.p, "ada_rt": rt}

    def state_dict(self) -> dict[str, float | int]:
        """p and the accumulators (plain numbers, JSON-friendly): loading them resumes exactly."""
        return {
            "p": self.p,
            "sum_sign": float(self._sum),
            "count": float(self._count),
            "images": self._images,
            "steps": self._steps,
        }

    def state_tensors(self) -> dict[str, Tensor]:
        """`state_dict()` as float64 scalars (a checkpoint's tensor file; exact for these values)."""
        return {k: torch.tensor(float(v), dtype=torch.float64) for k, v in self.state_dict().items()}

    def load_state_tensors(self, state: dict[str, Tensor]) -> None:
        """Restore `state_tensors()`'s output (validated as `load_state_dict`)."""
        plain = {k: (int(v.item()) if k in ("images", "steps") else float(v.item())) for k, v in state.items()}
        self.load_state_dict(plain)

    @classmethod
    def from_config(cls, augment: Any, device: torch.device | str) -> AdaController | None:
        """The controller of `augment.ada*` keys (None with augment.ada off)."""
        if not augment.ada:
            return None
        return cls(
            augment.ada_p,
            augment.ada_target,
            augment.ada_interval,
            augment.ada_kimg,
            augment.ada_fixed,
            device,
            augment.ada_pipeline,
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s output; a missing, unknown or out-of-range field is a DistganError naming it."""
        if not isinstance(state, dict):
            raise DistganError(f"ada state: must be a mapping, got {type(state).__name__}")
        expected = ("p", "sum_sign", "count", "images", "steps")
        for key in state:
            if key not in expected:
                raise DistganError(f"ada state: unknown field '{key}' (expected {', '.join(expected)})")
        for key in expected:
            if key not in state:
                raise DistganError(f"ada state: missing field '{key}'")
        _check_number("ada state: p", state["p"], 0.0, 1.0, DistganError)
        _check_number("ada state: count", state["count"], 0.0, math.inf, DistganError)
        _check_number("ada state: sum_sign", state["sum_sign"], -state["count"], state["count"], DistganError)
        for key in ("images", "steps"):
            value = state[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DistganError(f"ada state: {key} must be an integer >= 0, got {value!r}")
        self.p = float(state["p"])
        self._sum.fill_(float(state["sum_sign"]))
        self._count.fill_(float(state["count"]))
        self._images = state["images"]
        self._steps = state["steps"]


def _check_number(name: str, value: object, low: float, high: float, error: type[Exception]) -> None:
    """Raise `error` naming `name` unless value is a finite real number in [low, high]."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise error(f"{name}: must be a number in [{low:g}, {high:g}], got {value!r}")
