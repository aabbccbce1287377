"""Test helpers for metrics: a seeded random-weights Inception file, image folders, a tiny exported generator."""

from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3


class _RandomInit(FeatureExtractorInceptionV3):
    """torch-fidelity's InceptionV3 left at its random init (its constructor would load real weights)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):  # noqa: ANN001 - torch's signature
        return None


def write_random_inception_weights(path: Path, seed: int = 0) -> Path:
    """A plain state_dict with torch-fidelity's key names and seeded random weights (He-init convs, so the
    2048 features neither vanish nor explode through 94 layers)."""
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(seed)
    net = _RandomInit("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=2048**-0.5)
            torch.nn.init.normal_(m.bias, std=0.1)
    torch.save(net.state_dict(), path)
    return path


def digit_images(n: int, size: int, offset: int = 0, noise: float = 0.0, seed: int = 0) -> list[np.ndarray]:
    """n of scikit-learn's real digits (from `offset`), upscaled to size x size uint8, optionally noised."""
    digits = load_digits().images[offset : offset + n]
    rng = np.random.default_rng(seed)
    out = []
    for d in digits:
        im = np.asarray(Image.fromarray(np.round(d * 255 / 16).astype(np.uint8)).resize((size, size), Image.BICUBIC))
        if noise:
            im = np.clip(im + rng.normal(0, noise * 255, im.shape), 0, 255).astype(np.uint8)
        out.append(im)
    return out


def write_folder(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:05d}.png")
    return folder


def export_tiny_generator(
    out: Path, family: str = "dcgan", size: int = 16, channels: int = 1, seed: int = 0, **params
) -> Path:
    """An exported (untrained) generator folder, as a run's generator/ (model.safetensors + config.json)."""
    from distgan.family import DataSpec
    from distgan.registry import get_family
    from distgan.train.checkpoint import export_generator

    cls = get_family(family)
    p = cls.Params(**params)
    num_classes = 10 if "label" in cls.columns else None
    fam = cls(p, DataSpec(size, channels, num_classes))
    torch.manual_seed(seed)
    export_generator(fam.build_generator(), {"family": family, "params": asdict(p), "spec": fam.spec.to_dict()}, out)
    return out


def tiny_classifier(tmp_path_factory, digits: Path, size: int = 16) -> Path:
    """A classifier trained on the demo digits by scripts/train_classifier.py, once per test session."""
    import sys

    from tests.conftest import assert_ok, run

    out = tmp_path_factory.getbasetemp() / f"classifier{size}"
    if not (out / "config.json").is_file():
        cmd = [sys.executable, "scripts/train_classifier.py", "--data", str(digits), "--out", str(out)]
        args = ["--image-size", str(size), "--channels", "1", "--steps", "120", "--batch", "32"]
        result = run(cmd + args, env={"OMP_NUM_THREADS": "1"})  # one thread: 10x faster than 2 on a busy CPU
        assert_ok(result)
        assert "held-out test accuracy" in result.stdout
    return out
