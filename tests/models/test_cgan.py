"""The cgan family: conditioned networks' shapes, its two phases, the class-per-row sample layout, config checks."""

from __future__ import annotations

import pytest
import torch

from distgan.config import build_config
from distgan.errors import ConfigError
from distgan.family import DataSpec
from distgan.losses import d_bce, g_nonsaturating
from distgan.registry import family_names, get_family


def _family(size: int = 16, channels: int = 1, num_classes: int | None = 10, **params):
    cls = get_family("cgan")
    return cls(cls.Params(**params), DataSpec(size, channels, num_classes))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_and_reads_labels() -> None:
    assert "cgan" in family_names()
    fam = _family()
    assert fam.columns == ("image", "label") and fam.z_dim == 100


@pytest.mark.parametrize("size, channels, classes", [(16, 1, 10), (32, 3, 5), (64, 1, 10), (128, 3, 2)])
def test_shapes_follow_the_data_spec(size: int, channels: int, classes: int) -> None:
    fam = _family(size, channels, classes, z_dim=12, ngf=8, ndf=8)
    G, D = fam.build_generator(), fam.build_discriminator()
    label = torch.tensor([0, classes - 1, 1])
    x = G(torch.randn(3, 12), label)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # Tanh
    assert D(x, label).shape == (3,)  # one logit per image, no Sigmoid
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in D.modules())


def test_seed_architecture_at_64_is_dcgan_with_one_hot_inputs() -> None:
    # MNIST seed: G reads 100 + 10 = 110 values as (110, 1, 1); D reads 1 + 10 = 11 channels. Apart from those
    # wider first layers the networks are DCGAN's (ngf = ndf = 64, first G block 512 wide, D's first 64 wide).
    G, D = _family(64, 1, 10).build_generator(), _family(64, 1, 10).build_discriminator()
    dcgan = get_family("dcgan")(get_family("dcgan").Params(), DataSpec(64, 1))
    first_g = next(m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d))
    first_d = next(m for m in D.modules() if isinstance(m, torch.nn.Conv2d))
    assert (first_g.in_channels, first_g.out_channels, first_d.in_channels) == (110, 512, 11)
    assert _count(G) == _count(dcgan.build_generator()) + 10 * 512 * 4 * 4
    assert _count(D) == _count(dcgan.build_discriminator()) + 10 * 64 * 4 * 4


def test_dcgan_init() -> None:
    fam = _family(64, 1, 10)
    convs = [
        m.weight
        for m in [*fam.build_generator().modules(), *fam.build_discriminator().modules()]
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    stds = torch.tensor([w.std().item() for w in convs])
    assert torch.allclose(stds, torch.full_like(stds, 0.02), atol=0.004)


@torch.no_grad()
def test_both_networks_depend_on_the_label() -> None:
    fam = _family(ngf=8, ndf=8)
    G, D = fam.build_generator().eval(), fam.build_discriminator().eval()
    z = torch.randn(4, 100)
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    x = G(z, a)
    assert not torch.allclose(x, G(z, b))
    assert not torch.allclose(D(x, a), D(x, b))


def test_phases_use_the_real_labels_for_both_real_and_fake() -> None:
    fam = _family(ngf=8, ndf=8, z_dim=16)
    G, D = fam.build_generator(), fam.build_discriminator()
    batch = {"image": torch.rand(6, 1, 16, 16) * 2 - 1, "label": torch.tensor([0, 1, 2, 7, 8, 9])}
    z = torch.randn(6, 16)
    G.requires_grad_(False)  # the D phase, as the trainer runs it
    loss, stats = fam.d_phase(G, D, batch, z)
    assert set(stats) == {"loss_d", "d_real", "d_fake", "real_sign"} and torch.isfinite(loss)
    with torch.no_grad():  # train-mode BN uses batch statistics: the same inputs give the same logits
        y = batch["label"]
        expected = d_bce(D(batch["image"], y), D(G(z, y), y))
    assert torch.allclose(loss, expected)
    loss.backward()
    assert all(p.grad is not None for p in D.parameters()) and all(p.grad is None for p in G.parameters())

    D.zero_grad(set_to_none=True)
    G.requires_grad_(True)
    D.requires_grad_(False)  # the G phase
    loss, stats = fam.g_phase(G, D, batch, z)
    assert set(stats) == {"loss_g"}
    with torch.no_grad():
        assert torch.allclose(loss, g_nonsaturating(D(G(z, y), y)))
    loss.backward()
    assert all(p.grad is not None for p in G.parameters()) and all(p.grad is None for p in D.parameters())


def test_sample_inputs_one_class_per_row_same_noise_per_column() -> None:
    fam = _family(z_dim=5)
    inputs = fam.sample_inputs(64, torch.Generator().manual_seed(3))
    z, label = inputs["z"], inputs["label"]
    k = 6  # 64 // 10 samples per class
    assert z.shape == (60, 5) and label.shape == (60,) and label.dtype == torch.int64
    assert label.view(10, k).tolist() == [[r] * k for r in range(10)]  # row r = class r
    assert torch.equal(z.view(10, k, 5), z[:k].expand(10, k, 5))  # column j: the same z in every row
    assert len(set(map(tuple, z[:k].tolist()))) == k  # different noise across a row
    again = fam.sample_inputs(64, torch.Generator().manual_seed(3), {"label": torch.tensor([5, 5])})
    assert all(torch.equal(inputs[key], again[key]) for key in inputs)  # deterministic; a real batch is ignored
    assert fam.sample_inputs(4, torch.Generator())["label"].tolist() == list(range(10))  # at least one per class


def test_panel_rows_are_classes_unless_labels_were_replaced() -> None:
    fam = _family(z_dim=5)
    inputs = fam.sample_inputs(100, torch.Generator().manual_seed(0))
    images = torch.zeros(100, 1, 16, 16)
    shown, per_row = fam.panel(inputs, images)
    assert shown is images and per_row == 10
    assert fam.panel({**inputs, "label": torch.full((100,), 7)}, images)[1] == 10  # --class 7: a square grid
    random = {"z": inputs["z"][:36], "label": torch.randint(10, (36,), generator=torch.Generator().manual_seed(0))}
    assert fam.panel(random, images[:36])[1] == 6  # random classes: round(sqrt(36)) per row


def test_number_of_classes_must_be_known() -> None:
    with pytest.raises(ConfigError, match="data.num_classes"):
        _family(num_classes=None).build_generator()


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"image_size": 48}, "data.image_size: cgan needs a power of two >= 16, got 48"),
        ({"image_size": 8}, "data.image_size: cgan needs a power of two >= 16, got 8"),
        ({"label_column": ""}, "data.label_column: cgan is class-conditional"),
    ],
)
def test_config_validation(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        build_config({"model": {"family": "cgan"}, "data": {"path": "x", **data}})
    with pytest.raises(ConfigError, match="model.ngf: must be >= 1, got 0"):
        build_config({"model": {"family": "cgan", "ngf": 0}, "data": {"path": "x"}})
