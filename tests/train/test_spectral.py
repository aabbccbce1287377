"""Spectral norm as a wrapping step: on every Conv/ConvTranspose/Linear and nothing else; checkpoints
round-trip bitwise (u, v included); the exported plain state dict gives the SN network's eval outputs."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distgan.family import DataSpec
from distgan.registry import get_family
from distgan.train.spectral import SPECTRAL_LAYERS, apply_spectral_norm, plain_state_dict, spectral_layers


def _dcgan(size: int = 16):
    cls = get_family("dcgan")
    fam = cls(cls.Params(z_dim=8, ngf=8, ndf=8), DataSpec(size, 1))
    torch.manual_seed(0)
    return fam.build_generator(), fam.build_discriminator()


def test_applied_to_every_conv_convtranspose_and_linear_and_nothing_else() -> None:
    G, D = _dcgan()
    extra = nn.ModuleDict({"emb": nn.Embedding(4, 3), "fc": nn.Linear(3, 2), "bn": nn.BatchNorm1d(2)})
    for net in (G, D, extra):
        wanted = [m for m in net.modules() if isinstance(m, SPECTRAL_LAYERS)]
        assert apply_spectral_norm(net) is net and spectral_layers(net) == wanted
    assert {"emb.weight", "bn.weight", "fc.parametrizations.weight.original"} <= set(extra.state_dict())
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Embedding, nn.BatchNorm1d)) for m in spectral_layers(G))
    keys = set(D.state_dict())
    apply_spectral_norm(D)  # idempotent: no second parametrization
    assert set(D.state_dict()) == keys and all(len(m.parametrizations["weight"]) == 1 for m in spectral_layers(D))
    # ConvTranspose weights are normalized over their output dimension: sigma of (C_out, C_in*k*k)
    up = next(m for m in G.modules() if isinstance(m, nn.ConvTranspose2d))
    G.eval()
    w = up.weight  # W / sigma
    sigma = torch.linalg.matrix_norm(w.transpose(0, 1).flatten(1), ord=2)
    assert abs(sigma - 1) < 0.05  # W / sigma has norm ~1 (sigma is a power-iteration estimate)


def test_exported_plain_state_dict_loads_without_sn_and_gives_the_same_outputs(tmp_path: Path) -> None:
    G, D = _dcgan()
    apply_spectral_norm(G)
    z = torch.randn(4, 8)
    for _ in range(3):  # a few train-mode forwards: u, v move on, as in training
        G(z)
    G.eval()
    expected = G(z)
    was = {k: v.clone() for k, v in G.state_dict().items()}
    plain = plain_state_dict(G)
    assert not G.training and all(torch.equal(v, G.state_dict()[k]) for k, v in was.items())  # G untouched
    assert not any("parametrizations" in k for k in plain)
    save_file({k: v.contiguous() for k, v in plain.items()}, str(tmp_path / "model.safetensors"))
    fresh, _ = _dcgan()  # the family's network as built, no SN
    fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    assert torch.equal(fresh.eval()(z), expected)
    D.eval()
    assert plain_state_dict(D).keys() == D.state_dict().keys()  # no parametrization: the state dict as it is


def test_checkpoint_round_trip_is_bitwise_and_training_continues_alike(tmp_path: Path) -> None:
    _, D = _dcgan()
    apply_spectral_norm(D)
    x = torch.randn(4, 1, 16, 16)
    D(x)  # one power iteration
    save_file({k: v.contiguous() for k, v in D.state_dict().items()}, str(tmp_path / "D.safetensors"))
    torch.manual_seed(123)  # another RNG state: u, v of the new network start elsewhere
    _, resumed = _dcgan()
    apply_spectral_norm(resumed)  # the trainer wraps before loading
    resumed.load_state_dict(load_file(str(tmp_path / "D.safetensors")))
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in D.state_dict().items())
    assert any(k.endswith("weight.0._u") for k in resumed.state_dict())
    for _ in range(2):  # the next train-mode forwards (power iterations) agree bitwise
        assert torch.equal(D(x), resumed(x))
