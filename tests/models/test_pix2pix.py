"""The pix2pix family: U-Net and PatchGAN shapes and sizes, the 70x70 receptive field, test-time dropout,
the two phases, sample panels, config validation, and paired batches read through the family's columns."""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distgan.config import DataConfig, build_config, load_config
from distgan.data import ImageStream
from distgan.errors import ConfigError, DistganError
from distgan.family import DataSpec
from distgan.losses import d_bce, g_nonsaturating
from distgan.models.pix2pix import AlwaysDropout, PatchDiscriminator, Pix2Pix, UNetGenerator
from distgan.registry import family_names, get_family
from tests.conftest import run


def _family(size: int = 32, channels: int = 3, **params) -> Pix2Pix:
    return Pix2Pix(Pix2Pix.Params(**params), DataSpec(size, channels))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_with_paired_columns_and_no_latent() -> None:
    assert "pix2pix" in family_names() and get_family("pix2pix") is Pix2Pix
    fam = _family()
    assert Pix2Pix.columns == ("image", "source") and fam.z_dim == 0  # dropout is the noise
    p = fam.params
    assert (p.ngf, p.ndf, p.l1_weight, p.dropout, p.d_layers, p.norm) == (64, 64, 100.0, 0.5, 3, "batch")


@pytest.mark.parametrize("size, channels", [(16, 1), (32, 3), (64, 3), (256, 3)])
def test_unet_maps_source_to_an_image_of_the_same_shape(size: int, channels: int) -> None:
    G = _family(size, channels, ngf=4).build_generator()
    x = G(torch.randn(2, channels, size, size))
    assert x.shape == (2, channels, size, size) and x.min() >= -1 and x.max() <= 1  # Tanh


def test_unet_depth_follows_image_size_down_to_1x1_with_capped_widths() -> None:
    G = _family(256, 3, ngf=64).build_generator()
    shapes: list[tuple[int, ...]] = []
    hooks = [block.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for block in G.down]
    G.eval()(torch.randn(1, 3, 256, 256))
    for h in hooks:
        h.remove()
    # the paper's encoder C64-C128-C256-C512-C512-C512-C512-C512: 8 stride-2 levels, 256 -> 1
    assert shapes == [(64, 128, 128), (128, 64, 64), (256, 32, 32), (512, 16, 16)] + [
        (512, 8, 8),
        (512, 4, 4),
        (512, 2, 2),
        (512, 1, 1),
    ]
    # no norm on the first and the innermost encoder conv (a 1x1 map); LeakyReLU 0.2 elsewhere
    assert not any(isinstance(m, nn.BatchNorm2d) for m in [*G.down[0], *G.down[-1]])
    assert all(isinstance(b[1], nn.BatchNorm2d) for b in G.down[1:-1])
    assert {m.negative_slope for m in G.modules() if isinstance(m, nn.LeakyReLU)} == {0.2}


@pytest.mark.parametrize("norm", ["instance", "none"])
def test_other_norms_work_down_to_the_smallest_sizes(norm: str) -> None:
    fam = _family(32, 3, ngf=4, ndf=4, norm=norm)
    G, D = fam.build_generator(), fam.build_discriminator()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in [*G.modules(), *D.modules()])
    x = torch.randn(1, 3, 32, 32)  # batch 1: no normalised map may be 1x1
    assert D(x, G(x)).shape == (1, 1, 2, 2)


def test_networks_match_the_official_unet_256_and_basic_patchgan() -> None:
    # pytorch-CycleGAN-and-pix2pix prints "[Network G] ... 54.414 M" and "[Network D] ... 2.769 M" for
    # --netG unet_256 --netD basic --norm batch with RGB input; exact counts of the same layers and biases.
    fam = _family(256, 3)
    assert _count(fam.build_generator()) == 54_413_955
    assert _count(fam.build_discriminator()) == 2_768_705


@pytest.mark.parametrize("d_layers, size, patches", [(3, 256, 30), (3, 32, 2), (2, 16, 2), (1, 64, 30)])
def test_patchgan_judges_the_pair_with_a_map_of_logits(d_layers: int, size: int, patches: int) -> None:
    D = _family(size, 3, ndf=8, d_layers=d_layers).build_discriminator()
    assert D.net[0].in_channels == 6  # source and image concatenated
    out = D(torch.randn(2, 3, size, size), torch.randn(2, 3, size, size))
    assert out.shape == (2, 1, patches, patches)  # per-patch logits, no Sigmoid
    assert not any(isinstance(m, nn.Sigmoid) for m in D.modules())


@pytest.mark.parametrize("d_layers, field", [(3, 70), (2, 34), (1, 16)])
def test_patchgan_receptive_field(d_layers: int, field: int) -> None:
    """Back-propagate one central logit to the input and measure the extent of the nonzero gradient."""
    D = PatchDiscriminator(2, 8, d_layers).eval()  # eval: BN's batch statistics would spread gradient everywhere
    x = torch.randn(1, 2, 128, 128, requires_grad=True)
    logits = D(x[:, :1], x[:, 1:])
    c = logits.shape[-1] // 2
    logits[0, 0, c, c].backward()
    seen = x.grad[0].abs().sum(0) > 0  # (128, 128): input pixels this logit depends on
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    assert (int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1) == (field, field)
    assert int(seen.sum()) == field * field  # a full square patch: LeakyReLU never zeroes a path


def test_init_is_normal_002() -> None:
    fam = _family(256, 3)
    nets = (fam.build_generator(), fam.build_discriminator())
    convs = [m.weight for net in nets for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    stds = torch.tensor([w.std().item() for w in convs if w.numel() > 1000])  # big enough for a stable std
    assert torch.allclose(stds, torch.full_like(stds, 0.02), atol=0.004)


def test_dropout_is_noise_in_the_first_three_decoder_blocks_and_stays_on_in_eval() -> None:
    G = _family(256, 3, ngf=4).build_generator()
    with_dropout = [any(isinstance(m, AlwaysDropout) for m in block) for block in G.up]
    assert with_dropout == [True, True, True, False, False, False, False, False]
    G.eval()  # how distgan samples an exported generator
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        assert not torch.equal(G(x), G(x))  # the paper keeps dropout at test time
        G0 = UNetGenerator(3, 4, 256, dropout=0.0).eval()
        assert not any(isinstance(m, AlwaysDropout) for m in G0.modules())
        assert torch.equal(G0(x), G0(x))  # model.dropout=0: a deterministic translator


def test_skip_connections_carry_the_source_at_full_resolution() -> None:
    """A pixel change moves the output most right there: the outermost skip bypasses the bottleneck."""
    torch.manual_seed(0)
    G = UNetGenerator(1, 8, 64, norm="none", dropout=0.0).eval()
    x = torch.randn(1, 1, 64, 64)
    bumped = x.clone()
    bumped[0, 0, 40, 20] += 5
    with torch.no_grad():
        change = (G(bumped) - G(x)).abs()[0, 0]  # (64, 64)
    row, col = divmod(int(change.argmax()), 64)
    assert abs(row - 40) <= 3 and abs(col - 20) <= 3
    assert change[37:44, 17:24].mean() > 20 * change.mean()


def _batch(fam: Pix2Pix, n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s = fam.spec
    return {
        "source": torch.rand(n, s.channels, s.image_size, s.image_size, generator=g) * 2 - 1,
        "image": torch.rand(n, s.channels, s.image_size, s.image_size, generator=g) * 2 - 1,
    }


def test_phases_are_the_papers_losses() -> None:
    fam = _family(32, 3, ngf=8, ndf=8, dropout=0.0)
    G, D = fam.build_generator(), fam.build_discriminator()
    G.eval(), D.eval()  # deterministic forward passes, so the losses can be recomputed
    batch, z = _batch(fam), torch.zeros(4, fam.z_dim)
    loss_d, stats_d = fam.d_phase(G, D, batch, z)
    fake = G(batch["source"])
    real_logits, fake_logits = D(batch["source"], batch["image"]), D(batch["source"], fake)
    assert torch.allclose(loss_d, 0.5 * d_bce(real_logits, fake_logits))  # halved, as in the paper
    assert set(stats_d) == {"loss_d", "d_real", "d_fake", "real_sign"}
    assert torch.allclose(stats_d["d_real"], torch.sigmoid(real_logits).mean())
    loss_g, stats_g = fam.g_phase(G, D, batch, z)
    l1 = F.l1_loss(fake, batch["image"])
    assert set(stats_g) == {"loss_g", "loss_g_adv", "l1"}
    assert torch.allclose(stats_g["l1"], l1) and torch.allclose(stats_g["loss_g_adv"], g_nonsaturating(fake_logits))
    assert torch.allclose(loss_g, stats_g["loss_g_adv"] + 100 * l1)
    assert all(torch.isfinite(v) for v in [loss_d, loss_g, *stats_d.values(), *stats_g.values()])


def test_g_phase_trains_only_g_towards_the_target() -> None:
    torch.manual_seed(0)
    fam = _family(32, 3, ngf=8, ndf=8)
    G, D = fam.build_generator(), fam.build_discriminator()
    D.requires_grad_(False)  # as the trainer does in the G phase
    opt = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    source = F.interpolate(torch.rand(8, 3, 4, 4) * 2 - 1, size=32, mode="bilinear")  # smooth (8, 3, 32, 32)
    batch = {"source": source, "image": -source}  # a translation the U-Net can learn in a few steps
    l1 = []
    for _ in range(30):
        loss, stats = fam.g_phase(G, D, batch, torch.zeros(8, 0))
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in D.parameters())
        opt.step()
        l1.append(stats["l1"].item())
    assert all(p.grad is not None for p in G.parameters())
    assert l1[-1] < 0.6 * l1[0]


def test_samples_need_a_real_batch() -> None:
    fam = _family()
    with pytest.raises(DistganError, match=r"need source images: use launch/sample.py --input FOLDER"):
        fam.sample_inputs(4, torch.Generator())
    batch = _batch(fam, 4)
    inputs = fam.sample_inputs(3, torch.Generator(), batch)
    assert torch.equal(inputs["source"], batch["source"][:3]) and torch.equal(inputs["target"], batch["image"][:3])
    assert fam.sample_inputs(64, torch.Generator(), batch)["source"].shape[0] == 4  # at most one batch


def test_panel_rows_are_source_generated_target() -> None:
    fam = _family(32, 3, ngf=8)
    batch = _batch(fam, 3)
    inputs = fam.sample_inputs(3, torch.Generator(), batch)
    generated = fam.generate(fam.build_generator().eval(), inputs)
    grid, nrow = fam.panel(inputs, generated)
    assert nrow == 3 and grid.shape == (9, 3, 32, 32)
    for i in range(3):
        assert torch.equal(grid[3 * i], inputs["source"][i])
        assert torch.equal(grid[3 * i + 1], generated[i])
        assert torch.equal(grid[3 * i + 2], inputs["target"][i])
    grid, nrow = fam.panel({"source": inputs["source"]}, generated)  # translating a folder: no target
    assert nrow == 2 and torch.equal(grid[2], inputs["source"][1]) and torch.equal(grid[3], generated[1])


BASE = {"model": {"family": "pix2pix"}, "data": {"path": "x", "image_size": 256}}


@pytest.mark.parametrize(
    "model, data, expected",
    [
        ({}, {"image_size": 48}, "data.image_size: pix2pix needs a power of two >= 16 (U-Net depth), got 48"),
        ({}, {"image_size": 8}, "data.image_size: pix2pix needs a power of two >= 16"),
        ({}, {"image_size": 16}, "model.d_layers: 3 PatchGAN layers need data.image_size >= 24"),
        ({"d_layers": 0}, {}, "model.d_layers: must be >= 1, got 0"),
        ({"dropout": 1.0}, {}, "model.dropout: must be in [0, 1), got 1.0"),
        ({"l1_weight": -1}, {}, "model.l1_weight: must be >= 0"),
        ({"ngf": 0}, {}, "model.ngf: must be >= 1"),
        ({"norm": "layer"}, {}, "model.norm: must be one of 'batch', 'instance', 'none'"),
        ({"z_dim": 100}, {}, "model.z_dim: unknown key"),
    ],
)
def test_bad_params_are_one_line_naming_the_key(model: dict, data: dict, expected: str) -> None:
    raw = {"model": {**BASE["model"], **model}, "data": {**BASE["data"], **data}}
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_small_images_work_with_a_shallower_patchgan() -> None:
    cfg = build_config({"model": {"family": "pix2pix", "d_layers": 2}, "data": {"path": "x", "image_size": 16}})
    assert cfg.model.d_layers == 2


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """Real A|B pairs (outline | filled shape, 32x32 each) from the repo's own script."""
    out = tmp_path_factory.mktemp("shapes")
    result = run([sys.executable, "scripts/prepare_shapes.py", "--out", str(out), "--n", "16", "--size", "32"])
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_family_columns_give_aligned_source_and_target(shapes: Path, direction: str) -> None:
    cfg = DataConfig(path=str(shapes), image_size=32, channels=3, direction=direction, load_size=40, random_flip=True)
    cfg.num_workers, cfg.shuffle_buffer = 0, 0  # in order, in this process
    _, batch = next(ImageStream(cfg, Pix2Pix.columns).batches(16, seed=0, rank=0, world_size=1))
    source, target = batch["source"], batch["image"]
    assert source.shape == target.shape == (16, 3, 32, 32)
    outline, filled = (source, target) if direction == "AtoB" else (target, source)
    line, shape = (outline > 0).any(1), (filled > -0.5).any(1)  # (B, H, W): bright line, (edges of) the shape
    assert shape.sum() > 2 * line.sum()  # filled shapes cover more than their outlines
    # the same crop and flip for both halves: the outlines lie on their shapes, and not on mirrored ones
    on_shape = float((line & shape).sum() / line.sum())
    on_mirror = float((line & shape.flip(-1)).sum() / line.sum())
    assert on_shape > 0.8 and on_shape > on_mirror + 0.25, (on_shape, on_mirror)


def test_facades_config_translates_labels_to_photos(shapes: Path, tmp_path: Path) -> None:
    """configs/pix2pix_facades.yaml reads huggan/facades' two columns, imageA = photo and imageB = label map,
    and must give G the label map: here a local copy with filled shapes as "photos" and outlines as "labels"."""
    pairs = datasets.load_dataset("parquet", data_dir=str(shapes), split="train")
    rows = {"imageA": [], "imageB": []}
    for image in pairs["image"]:
        rows["imageA"].append(image.crop((32, 0, 64, 32)))  # the filled shape: the "photo"
        rows["imageB"].append(image.crop((0, 0, 32, 32)))  # its outline: the "label map"
    features = datasets.Features({"imageA": datasets.Image(), "imageB": datasets.Image()})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    overrides = [f"data.path={tmp_path}", "data.image_size=32", "data.load_size=36", "data.num_workers=0"]
    cfg = load_config("pix2pix_facades", overrides)
    _, batch = next(ImageStream(cfg.data, Pix2Pix.columns).batches(16, seed=0, rank=0, world_size=1))
    source_lit, target_lit = ((batch[k] > 0).any(1).sum() for k in ("source", "image"))
    assert target_lit > 2 * source_lit  # G translates the outlines ("labels") into the filled shapes ("photos")
