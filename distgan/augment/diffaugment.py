"""DiffAugment (Zhao et al., 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random, differentiable transform is applied to every image D sees, real and generated, in both
phases, so D cannot overfit a small dataset and G still gets gradients through the augmentation. The
policies and their ranges are the paper's (mit-han-lab/data-efficient-gans):

- color: brightness + U(-0.5, 0.5), saturation x U(0, 2) around the per-pixel channel mean, contrast
  x U(0.5, 1.5) around the image mean (for images in [-1, 1]);
- translation: an integer shift of up to 1/8 of the side in each direction, zero-filled;
- cutout: a zeroed square of half the side, centred anywhere in the image (clipped at the border).

Randomness is split from the transform so that a trainer can key it like its noise: `sample_params` draws
the parameters of a whole global batch from one generator, `slice_params` takes a rank's micro-batch out
of it, `apply` transforms. Sample i's augmentation then depends only on the generator's seed and on i,
so 1 process x 2B, 2 processes x B and B x 2 accumulation augment every global sample alike.
A pair (pix2pix's source and image) is augmented identically by passing both to `apply` as a list.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from distgan.errors import ConfigError

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125  # the paper's: up to 1/8 of the side
CUTOUT_RATIO = 0.5  # the paper's: a square of half the side

Params = dict[str, Tensor]  # each (N, ...) with one row per sample


def parse_policy(policy: str) -> tuple[str, ...]:
    """The policy names of e.g. "color,translation,cutout" ("" -> none); an unknown name is a ConfigError."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    for name in names:
        if name not in POLICIES:
            raise ConfigError(
                f"augment.diffaugment: unknown policy '{name}' (choose from {', '.join(POLICIES)}, "
                "comma-separated, e.g. 'color,translation,cutout'; or '' for none)"
            )
    return names


def sample_params(
    policy: Sequence[str], n: int, size: tuple[int, int], generator: torch.Generator, device: torch.device | str
) -> Params:
    """Random parameters for n samples of images of `size` (H, W), drawn in a fixed order from `generator`.

    The draws for sample i are row i of each tensor, so slicing the result equals sampling fewer rows only
    if the same n is drawn: draw the whole global batch, then `slice_params`.
    """
    h, w = size
    params: Params = {}
    for name in policy:
        if name == "color":
            params["brightness"] = torch.rand(n, generator=generator, device=device) - 0.5
            params["saturation"] = torch.rand(n, generator=generator, device=device) * 2
            params["contrast"] = torch.rand(n, generator=generator, device=device) + 0.5
        elif name == "translation":
            sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
            params["shift_h"] = torch.randint(-sh, sh + 1, (n,), generator=generator, device=device)
            params["shift_w"] = torch.randint(-sw, sw + 1, (n,), generator=generator, device=device)
        elif name == "cutout":
            ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
            params["cutout_h"] = torch.randint(0, h + (1 - ch % 2), (n,), generator=generator, device=device)
            params["cutout_w"] = torch.randint(0, w + (1 - cw % 2), (n,), generator=generator, device=device)
    return params


def slice_params(params: Params, start: int, stop: int) -> Params:
    """The parameters of samples start..stop-1 (a rank's micro-batch out of the global batch)."""
    return {k: v[start:stop] for k, v in params.items()}


def apply(x: Tensor | Sequence[Tensor], policy: Sequence[str], params: Params) -> Tensor | list[Tensor]:
    """Augment images (N, C, H, W) with `params`; a list of tensors (a pair) gets the same transform each."""
    if not isinstance(x, Tensor):
        return [_apply_one(t, policy, params) for t in x]
    return _apply_one(x, policy, params)


def diff_augment(x: Tensor, policy: str, generator: torch.Generator) -> Tensor:
    """Augment one batch with parameters drawn from `generator` (the single-process form of the above)."""
    names = parse_policy(policy)
    return _apply_one(x, names, sample_params(names, x.shape[0], x.shape[-2:], generator, x.device))


def _apply_one(x: Tensor, policy: Sequence[str], params: Params) -> Tensor:
    for name in policy:
        if name == "color":
            x = _color(x, params)
        elif name == "translation":
            x = _translate(x, params["shift_h"], params["shift_w"])
        elif name == "cutout":
            x = _cutout(x, params["cutout_h"], params["cutout_w"])
    return x


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    return v.to(x.dtype).view(-1, 1, 1, 1)  # (N, 1, 1, 1), broadcast over C, H, W


def _color(x: Tensor, p: Params) -> Tensor:
    x = x + _per_sample(p["brightness"], x)
    mean = x.mean(dim=1, keepdim=True)  # (N, 1, H, W): grey level per pixel (no-op for one channel)
    x = (x - mean) * _per_sample(p["saturation"], x) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    return (x - mean) * _per_sample(p["contrast"], x) + mean


def _translate(x: Tensor, shift_h: Tensor, shift_w: Tensor) -> Tensor:
    """out[n, :, i, j] = x[n, :, i + shift_h[n], j + shift_w[n]], zero outside the image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))  # (N, C, H + 2, W + 2): index 0 and H + 1 are the zero border
    rows = (torch.arange(h, device=x.device) + shift_h.view(-1, 1) + 1).clamp(0, h + 1)  # (N, H)
    cols = (torch.arange(w, device=x.device) + shift_w.view(-1, 1) + 1).clamp(0, w + 1)  # (N, W)
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2))  # (N, C, H, W + 2)
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))  # (N, C, H, W)


def _cutout(x: Tensor, centre_h: Tensor, centre_w: Tensor) -> Tensor:
    """Zero a square of CUTOUT_RATIO of the side, rows [centre_h - size // 2, centre_h - size // 2 + size)."""
    n, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    top, left = (centre_h - ch // 2).view(-1, 1), (centre_w - cw // 2).view(-1, 1)  # (N, 1)
    r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (r >= top) & (r < top + ch)  # (N, H)
    in_cols = (c >= left) & (c < left + cw)  # (N, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (N, H, W)
    return x * keep[:, None].to(x.dtype)
