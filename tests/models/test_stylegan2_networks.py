"""StyleGAN2's networks: equal to the official ones (the shared referee, float64 and float32), and right
beyond the one reference configuration: the training (non-fused) and inference (fused) modulated
convolutions agree for every architecture, conditional, grayscale and wider setups; minibatch std groups
as the paper does; the trainer's noise, style-mixing and w_avg inputs do what they say."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from distgan.models.stylegan2_networks import Discriminator, Generator, MinibatchStdLayer
from tests.conftest import SG2_REFERENCE, needs_sg2_reference, run


def _nets(size=16, channels=3, c_dim=0, g_arch="skip", d_arch="resnet", layers=2, group=4, **extra):
    G = Generator(
        z_dim=8,
        c_dim=c_dim,
        w_dim=8,
        img_resolution=size,
        img_channels=channels,
        mapping_kwargs={"num_layers": layers},
        synthesis_kwargs={"channel_base": 64 * size, "channel_max": 16, "architecture": g_arch, **extra},
    )
    D = Discriminator(
        c_dim=c_dim,
        img_resolution=size,
        img_channels=channels,
        architecture=d_arch,
        channel_base=64 * size,
        channel_max=16,
        epilogue_kwargs={"mbstd_group_size": group},
    )
    return G.double(), D.double()


@needs_sg2_reference
def test_official_reference_outputs_float64_and_float32(tmp_path) -> None:
    (tmp_path / "sg2_factory.py").write_text(
        "from distgan.models.stylegan2_networks import Discriminator, Generator\n"
        "def make(cfg):\n    return Generator(**cfg['G_kwargs']), Discriminator(**cfg['D_kwargs'])\n"
    )
    result = run(
        [
            sys.executable,
            str(SG2_REFERENCE / "referee.py"),
            "--ref",
            str(SG2_REFERENCE / "small_uncond"),
            "--candidate-module",
            "sg2_factory:make",
            "--pythonpath",
            str(tmp_path),
            "--dtype",
            "both",
        ]
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    summary = lines[-1]
    assert result.returncode == 0 and summary["passed"] and summary["failed"] == 0, result.stdout + result.stderr
    assert summary["checks"] >= 26  # every check ran, in both dtypes
    assert all(rec["key_order_matches_reference"] for rec in lines if rec.get("check") == "load_state_dict")


@pytest.mark.parametrize(
    "kw",
    [
        {"g_arch": "skip", "d_arch": "resnet"},
        {"g_arch": "orig", "d_arch": "orig"},
        {"g_arch": "resnet", "d_arch": "skip"},
        {"c_dim": 3, "channels": 1},
        {"size": 32, "layers": 8, "group": 2},
    ],
)
def test_fused_and_training_modulated_convolutions_agree(kw) -> None:
    torch.manual_seed(0)
    G, D = _nets(**kw)
    c_dim = kw.get("c_dim", 0)
    z = torch.randn(4, 8, dtype=torch.float64)
    c = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), c_dim).double() if c_dim else z.new_zeros(4, 0)
    G.eval()
    fused = G(z, c, noise_mode="const", fused_modconv=True)
    split = G(z, c, noise_mode="const", fused_modconv=False)
    assert fused.shape == (4, G.img_channels, G.img_resolution, G.img_resolution) and fused.dtype == torch.float64
    torch.testing.assert_close(fused, split, rtol=1e-10, atol=1e-10)
    logits = D(fused, c)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    # train mode picks the non-fused form; eval the fused one: same numbers either way
    G.train()
    torch.testing.assert_close(G(z, c, noise_mode="const", w_mean=lambda m: G.mapping.w_avg), fused)


def test_state_dict_keys_follow_the_official_layout() -> None:
    G, D = _nets(c_dim=3)
    g, d = G.state_dict(), D.state_dict()
    assert list(g)[:2] == ["synthesis.b4.const", "synthesis.b4.resample_filter"]
    assert {"mapping.embed.weight", "mapping.w_avg", "synthesis.b16.conv0.noise_const"} <= set(g)
    # conditional D: a class-embedding mapping network (8 layers by default) and a cmap-wide output layer
    assert {"mapping.embed.weight", "mapping.fc7.weight", "b4.out.weight", "b16.skip.weight"} <= set(d)
    assert d["b4.out.weight"].shape[0] == d["b4.fc.weight"].shape[0]
    assert "mapping.w_avg" not in d


def test_minibatch_std_groups_sample_i_with_i_mod_groups() -> None:
    x = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    y = MinibatchStdLayer(group_size=2)(x)
    assert y.shape == (6, 5, 3, 3)
    for i in range(6):  # groups of 2: {0, 3}, {1, 4}, {2, 5}
        pair = x[[i % 3, i % 3 + 3]]
        expected = ((pair - pair.mean(0)).square().mean(0) + 1e-8).sqrt().mean()
        torch.testing.assert_close(y[i, 4], expected.expand(3, 3))
    with pytest.raises(ValueError, match="mbstd_group_size"):
        MinibatchStdLayer(group_size=4)(x)


def test_noise_inputs_mixing_and_w_avg() -> None:
    torch.manual_seed(1)
    G, _ = _nets()
    G.eval()
    z, c = torch.randn(3, 8, dtype=torch.float64), torch.zeros(3, 0, dtype=torch.float64)
    shapes = G.synthesis.noise_shapes()
    assert [name for name, _ in shapes] == ["b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1"]
    const = {
        name: getattr(G.synthesis, name.split(".")[0]).get_submodule(name.split(".")[1]).noise_const
        for name, _ in shapes
    }
    for layer in G.modules():  # non-zero strengths, so the noise matters
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.fill_(0.5)
    given = {name: t.expand(3, 1, *t.shape).double() for name, t in const.items()}
    torch.testing.assert_close(G(z, c, noise=given), G(z, c, noise_mode="const"))
    assert not torch.allclose(G(z, c), G(z, c, noise=given))  # drawn noise otherwise
    # style mixing per sample: mix_layer == num_ws keeps a sample's own ws; k takes ws[k:] from mix_z
    z2 = torch.randn(3, 8, dtype=torch.float64)
    _, ws = G(z, c, mix_z=z2, mix_layer=torch.tensor([G.num_ws, 2, 0]), return_ws=True, noise_mode="none")
    own, other = G.mapping(z, c), G.mapping(z2, c)
    torch.testing.assert_close(ws[0], own[0])
    torch.testing.assert_close(ws[1], torch.cat([own[1, :2], other[1, 2:]]))
    torch.testing.assert_close(ws[2], other[2])
    # w_avg: eval leaves it; train moves it towards w_mean(batch mean) with beta 0.995, not towards mix_z's
    before = G.mapping.w_avg.clone()
    G(z, c)
    assert torch.equal(G.mapping.w_avg, before)
    G.train()
    target = torch.full_like(before, 3.0)
    G(z, c, mix_z=z2, mix_layer=torch.zeros(3, dtype=torch.long), w_mean=lambda m: target)
    torch.testing.assert_close(G.mapping.w_avg, target.lerp(before, 0.995))


def test_truncation_moves_towards_w_avg_on_the_first_layers_only() -> None:
    G, _ = _nets()
    G.mapping.w_avg.normal_()
    z, c = torch.randn(2, 8, dtype=torch.float64), torch.zeros(2, 0, dtype=torch.float64)
    ws = G.mapping(z, c)
    cut = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(cut[:, :3], G.mapping.w_avg.lerp(ws[:, :3], 0.5))
    torch.testing.assert_close(cut[:, 3:], ws[:, 3:])
