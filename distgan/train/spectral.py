"""Spectral normalization (Miyato et al., 2018) as a wrapping step: `train.spectral_norm: none | D | G | both`.

The trainer applies it to the plain networks after building them (after `set_seed`, before DDP and before
a checkpoint is loaded), so a family never writes it. It uses torch's `parametrizations.spectral_norm`:

- the weight becomes W / sigma(W), with sigma estimated by one power iteration per forward in train mode
  (none in eval mode); the estimate's vectors u, v are buffers;
- the state dict then holds `<module>.parametrizations.weight.original` (the trained W) and
  `<module>.parametrizations.weight.0._u` / `._v`. Checkpoints store it as it is, so resume is bitwise
  (u and v included) once the resumed network is wrapped the same way before loading;
- the exported generator is written with `plain_state_dict`: every parametrization removed on a copy,
  leaving the plain weight W / sigma that the eval-mode network uses, so it loads into the family's
  network as built, knowing nothing of spectral norm, and gives the same images.

Applying it draws u and v from the global RNG (once per layer), so all ranks must apply it alike (they do:
the trainer seeds every rank the same, and DDP broadcasts rank 0's buffers anyway).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

SPECTRAL_LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral-normalize the weight of every Conv, ConvTranspose and Linear in `module` (in place); returns it.

    Layers whose weight is already parametrized are left alone, so applying it twice changes nothing.
    ConvTranspose weights are normalized over their output dimension (torch picks dim=1 for them).
    """
    for m in list(module.modules()):
        if isinstance(m, SPECTRAL_LAYERS) and not parametrize.is_parametrized(m, "weight"):
            spectral_norm(m)
    return module


def spectral_layers(module: nn.Module) -> list[nn.Module]:
    """The submodules whose weight is spectral-normalized."""
    return [
        m
        for m in module.modules()
        if parametrize.is_parametrized(m, "weight")
        and any(type(p).__name__ == "_SpectralNorm" for p in m.parametrizations["weight"])
    ]


def plain_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """The state dict of `module` with every parametrization baked in (W / sigma for spectral norm).

    Each parametrized tensor is evaluated in eval mode (no power iteration: u, v untouched) and stored under
    its plain name, in place of `parametrizations.<name>.original` and the parametrization's buffers; the
    result loads into the same network built without parametrizations. `module` is left as it was (its
    train/eval modes restored). It is not copied and stripped with `remove_parametrizations`: a deep copy
    shares the parametrized class with the original, and removing the parametrization from the copy deletes
    the `weight` property from that class, breaking the original.
    """
    parametrized = [(name, m) for name, m in module.named_modules() if parametrize.is_parametrized(m)]
    if not parametrized:
        return module.state_dict()
    state = module.state_dict()
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            for prefix, m in parametrized:
                dot = f"{prefix}." if prefix else ""
                for tensor_name in m.parametrizations:
                    inner = f"{dot}parametrizations.{tensor_name}."
                    for key in [k for k in state if k.startswith(inner)]:
                        del state[key]
                    state[f"{dot}{tensor_name}"] = getattr(m, tensor_name).detach().clone()
    finally:
        for m, training in modes:
            m.training = training
    return state
