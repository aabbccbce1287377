"""The sngan family: shapes, the paper's parameter counts, registration by its one file, its declared
recipe, and a short run through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distgan.family import DataSpec
from distgan.losses import ADVERSARIAL, r1_penalty
from distgan.registry import family_names, get_family
from distgan.sampling import load_generator, sample
from distgan.train.spectral import apply_spectral_norm, spectral_layers
from tests.conftest import TEST_CONFIGS, assert_ok, launch_train


def _nets(size: int, channels: int, **params):
    cls = get_family("sngan")
    fam = cls(cls.Params(**params), DataSpec(size, channels))
    return fam, fam.build_generator(), fam.build_discriminator()


def test_registered_by_its_one_file_with_its_recipe_declared() -> None:
    cls = get_family("sngan")
    assert "sngan" in family_names() and cls.__module__ == "distgan.models.sngan"
    assert cls.default_loss == "hinge" and cls.default_loss in ADVERSARIAL
    assert cls.default_spectral_norm == "D"


@pytest.mark.parametrize("size, channels", [(16, 1), (32, 3), (64, 3)])
def test_shapes_follow_image_size(size: int, channels: int) -> None:
    fam, G, D = _nets(size, channels, z_dim=16, ngf=16, ndf=16)
    x = G(torch.randn(3, fam.z_dim))
    assert x.shape == (3, channels, size, size) and x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (3,)
    ups = sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) // 2  # two BNs per up-block, one at the end
    assert 4 * 2**ups == size


def test_parameter_counts_are_the_papers_cifar10_networks() -> None:
    # Miyato et al. 2018, Table 4 (ResNet, CIFAR-10): z=128, G width 256, D width 128, 3x32x32.
    _, G, D = _nets(32, 3)
    z, g, d, c = 128, 256, 128, 3
    conv = lambda i, o, k: i * o * k * k + o  # noqa: E731
    g_block = 2 * 2 * g + 2 * conv(g, g, 3) + conv(g, g, 1)  # BN, BN, 2 conv3x3, 1x1 shortcut
    expected_g = (z * 16 * g + 16 * g) + 3 * g_block + 2 * g + conv(g, c, 3)
    first = conv(c, d, 3) + conv(d, d, 3) + conv(c, d, 1)
    down = 2 * conv(d, d, 3) + conv(d, d, 1)
    plain = 2 * conv(d, d, 3)  # same width and size: identity shortcut
    expected_d = first + down + 2 * plain + (d + 1)
    assert sum(p.numel() for p in G.parameters()) == expected_g == 4_276_739
    assert sum(p.numel() for p in D.parameters()) == expected_d == 1_053_825


def test_d_with_spectral_norm_supports_r1() -> None:
    _, G, D = _nets(16, 1, z_dim=8, ngf=8, ndf=8)
    apply_spectral_norm(D)
    assert len(spectral_layers(D)) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in D.modules())
    r1, logits = r1_penalty(D, G(torch.randn(4, 8)).detach())
    (r1 + logits.mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())


def test_two_process_run_through_the_entry_point_exports_a_generator(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "run"
    args = ["--config", str(TEST_CONFIGS / "tiny_sngan.yaml"), "--output-dir", str(out), f"data.path={digits}"]
    result = launch_train(args, nproc=2)
    assert_ok(result)
    assert "(sngan) on 2 x cpu" in result.stdout and '"global_batch": 16' in result.stdout
    meta = json.loads((out / "generator" / "config.json").read_text())
    assert meta["family"] == "sngan" and meta["step"] == 4
    family, G = load_generator(out / "generator")
    _, images = sample(family, G, 5)
    assert images.shape == (5, 1, 16, 16) and torch.isfinite(images).all()
