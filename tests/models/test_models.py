"""Shapes, parameter counts and init of the gan and dcgan families' networks."""

from __future__ import annotations

import pytest
import torch

from distgan.family import DataSpec
from distgan.registry import family_names, get_family


def _nets(family: str, size: int, channels: int, **params):
    cls = get_family(family)
    fam = cls(cls.Params(**params), DataSpec(size, channels))
    return fam, fam.build_generator(), fam.build_discriminator()


def test_families_are_registered() -> None:
    assert {"gan", "dcgan"} <= set(family_names())


@pytest.mark.parametrize("size, channels", [(16, 1), (32, 1), (64, 3), (128, 3)])
def test_dcgan_shapes_follow_image_size(size: int, channels: int) -> None:
    fam, G, D = _nets("dcgan", size, channels, ngf=8, ndf=8)
    z = torch.randn(3, fam.z_dim)
    x = G(z)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # Tanh
    assert D(x).shape == (3,)  # one logit per image, no Sigmoid


def test_dcgan_matches_the_seed_at_64() -> None:
    # The PyTorch DCGAN faces example: netG has 3,576,704 parameters and netD 2,765,568.
    _, G, D = _nets("dcgan", 64, 3)
    assert sum(p.numel() for p in G.parameters()) == 3_576_704
    assert sum(p.numel() for p in D.parameters()) == 2_765_568
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in D.modules())
    first_bn = [m for m in D.net if not isinstance(m, (torch.nn.Conv2d, torch.nn.LeakyReLU))]
    assert not isinstance(D.net[1], torch.nn.BatchNorm2d) and first_bn  # no BN on D's first block


def test_dcgan_init_is_normal_002() -> None:
    _, G, D = _nets("dcgan", 64, 3)
    convs = [
        m.weight for m in [*G.modules(), *D.modules()] if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    stds = torch.tensor([w.std().item() for w in convs])
    assert torch.allclose(stds, torch.full_like(stds, 0.02), atol=0.004)
    bns = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(abs(m.weight.mean().item() - 1) < 0.01 for m in bns)


def test_dcgan_bn_free_variant_has_no_batchnorm() -> None:
    _, G, D = _nets("dcgan", 16, 1, norm="none")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in [*G.modules(), *D.modules()])


def test_gan_mlp_shapes() -> None:
    fam, G, D = _nets("gan", 28, 1)
    x = G(torch.randn(5, 100))
    assert x.shape == (5, 1, 28, 28)
    assert D(x).shape == (5,)
    widths = [m.out_features for m in G.net if isinstance(m, torch.nn.Linear)]
    assert widths == [256, 512, 1024, 784]
