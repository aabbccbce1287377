"""Rebuild an exported generator (`RUN/generator`) and draw images from it, without the training config."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from distgan.config import ModelParams, _build
from distgan.errors import DistganError
from distgan.family import DataSpec, Family
from distgan.registry import get_family
from distgan.train.checkpoint import load_weights


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[Family, nn.Module]:
    """(family, G in eval mode) from a folder holding model.safetensors + config.json."""
    folder = Path(path)
    meta_file = folder / "config.json"
    if not meta_file.is_file() or not (folder / "model.safetensors").is_file():
        raise DistganError(
            f"--generator {path}: expected model.safetensors and config.json (a run's generator/ folder)"
        )
    meta = json.loads(meta_file.read_text())
    family_cls = get_family(meta["family"])
    params: ModelParams = _build(family_cls.Params, meta["params"], "model")
    family = family_cls(params, DataSpec(**meta["spec"]))
    G = family.build_generator()
    load_weights(G, folder / "model.safetensors")
    return family, G.to(device).eval()


@torch.no_grad()
def sample(family: Family, G: nn.Module, n: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(inputs, n generated images in [-1, 1] as (n, C, H, W)) from the family's inputs drawn with `seed`."""
    device = next(G.parameters()).device
    inputs = {k: v.to(device) for k, v in family.sample_inputs(n, torch.Generator().manual_seed(seed)).items()}
    return inputs, family.generate(G, inputs)
