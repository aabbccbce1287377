"""Choosing a feature extractor (`inception` or `classifier:PATH`) and the uint8 convention both are fed.

Every image, real or generated, becomes uint8 with StyleGAN's rounding before any network sees it, so
both sides are quantised the same way (real images from the data stream were uint8 before they were
scaled to [-1, 1], so this round-trips them exactly).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from distgan.errors import DistganError


def to_uint8(images: Tensor) -> Tensor:
    """(B, C, H, W) in [-1, 1] -> uint8, as StyleGAN: (x * 127.5 + 128).clamp(0, 255) truncated."""
    return (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def load_extractor(features: str = "inception", inception_weights: str | Path | None = None) -> nn.Module:
    """`inception` (torch-fidelity's InceptionV3) or `classifier:PATH` (scripts/train_classifier.py's output).

    The module maps uint8 (B, C, H, W) to {"pool": (B, dim), "logits": (B, num_classes)} and has `name`,
    `weights_sha256`, `dim` and `num_classes`.
    """
    if features == "inception":
        from distgan.metrics.inception import InceptionFeatures

        return InceptionFeatures(inception_weights)
    if features.startswith("classifier:") and len(features) > len("classifier:"):
        from distgan.metrics.classifier import ClassifierFeatures

        return ClassifierFeatures(features.split(":", 1)[1])
    raise DistganError(f"--features {features}: must be 'inception' or 'classifier:PATH'")


def check_extractor(features: str = "inception", inception_weights: str | Path | None = None) -> None:
    """Cheap start-up check (no network is built): the weights file or classifier folder is there."""
    if features == "inception":
        from distgan.metrics.inception import resolve_inception_weights

        resolve_inception_weights(inception_weights)
    elif features.startswith("classifier:") and len(features) > len("classifier:"):
        folder = Path(features.split(":", 1)[1])
        if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
            raise DistganError(
                f"--features {features}: expected model.safetensors and config.json in {folder} "
                "(train one: python scripts/train_classifier.py --data PATH --out DIR)"
            )
    else:
        raise DistganError(f"--features {features}: must be 'inception' or 'classifier:PATH'")
