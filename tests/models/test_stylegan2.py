"""The stylegan2 family: its four loss phases equal the official loss on the shared reference (per-sample
losses, every parameter's gradient, w_avg and the path-length mean after), its config checks, and its
sampling inputs."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from distgan.config import build_config
from distgan.errors import ConfigError
from distgan.family import DataSpec
from distgan.losses.recipe import PhaseContext, Recipe
from distgan.registry import get_family
from tests.conftest import SG2_REFERENCE, needs_sg2_reference, run

REF = SG2_REFERENCE / "small_uncond"
# the reference's networks (config.json) in model.* keys, and its loss_kwargs
REF_MODEL = {
    "family": "stylegan2",
    "z_dim": 64,
    "w_dim": 64,
    "mapping_layers": 2,
    "channel_base": 1024,
    "channel_max": 64,
    "style_mixing_prob": 0.0,
    "pl_weight": 2.0,
    "pl_batch_shrink": 2,
    "pl_decay": 0.01,
}


def _config(model: dict | None = None, **sections):
    raw = {"model": {**REF_MODEL, **(model or {})}, "data": {"path": "x", "image_size": 32, "channels": 3}}
    return build_config(raw | {"loss": {"r1_gamma": 1.0, "r1_every": 16}} | sections)


@needs_sg2_reference
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_phases_equal_the_official_loss(dtype: torch.dtype) -> None:
    suffix = "" if dtype == torch.float64 else "_fp32"
    ref = json.loads((REF / f"loss_ref{suffix}.json").read_text())
    io = load_file(REF / f"io{suffix}.safetensors")
    draws = load_file(REF / "loss_draws_fp32.safetensors")
    cfg = _config()
    family = get_family("stylegan2")(cfg.model, DataSpec(32, 3))
    specs = {s.name: s for s in family.phases(cfg)}
    assert list(specs) == ["Gmain", "Greg", "Dmain", "Dreg"]
    assert (specs["Greg"].interval, specs["Dreg"].interval, specs["Greg"].batch_divisor) == (4, 16, 2)
    noise_names = [name for name, _ in family._noise_shapes()]
    tol = 1e-7 if dtype == torch.float64 else 1e-4  # the draws are float32 in both runs
    for name, spec in specs.items():
        r = ref["phases"][name]
        nets = family.build_networks()
        nets["G"].load_state_dict(load_file(REF / "G.safetensors"))
        nets["D"].load_state_dict(load_file(REF / "D.safetensors"))
        for net_name, net in nets.items():
            net.to(dtype).train().requires_grad_(net_name == spec.updates)
        family.pl_mean = torch.zeros(())
        n = 2 if name == "Greg" else 4
        d = {"mix_z": torch.zeros(n, 64, dtype=dtype), "mix_u": torch.ones(n), "mix_layer": torch.full((n,), 8)}
        d["noise"] = (
            {k: draws[f"{name}.{i:02d}"].to(dtype) for i, k in enumerate(noise_names)} if name != "Dreg" else {}
        )
        if name == "Greg":
            d["pl_noise"] = draws["Greg.07"].to(dtype)
        loss, stats = spec.loss(nets, {"image": io["x_real"]}, io["z"][:n], PhaseContext(Recipe(), d))
        loss.backward()
        per_sample = {"Gmain": "Loss/G/loss", "Greg": "Loss/G/reg", "Dmain": "Loss/D/loss", "Dreg": "Loss/D/reg"}
        expected = torch.tensor(r["reported"][per_sample[name]][0], dtype=torch.float64).mean()
        assert abs(loss.item() - expected.item()) <= tol * abs(expected.item()), name
        params = dict(nets[spec.updates].named_parameters())
        assert set(r["grads"]) == set(params), name
        for key, g in r["grads"].items():
            grad = params[key].grad
            got = torch.zeros(()) if grad is None else grad.double()
            for what, value in (("norm", got.norm()), ("sum", got.sum()), ("max_abs", got.abs().max())):
                # a sum's rounding grows with its l1 norm, up to sqrt(numel) x the l2 norm
                scale = max(r["grad_total_norm"], g["norm"] * params[key].numel() ** 0.5 if what == "sum" else 0)
                assert abs(value.item() - g[what]) <= tol * scale, f"{name} {key} {what}"
        w_avg = torch.tensor(r["w_avg_after"], dtype=dtype)
        torch.testing.assert_close(nets["G"].mapping.w_avg, w_avg, rtol=tol, atol=tol)
        assert abs(family.pl_mean.item() - r["pl_mean_after"]) <= tol * max(1.0, r["pl_mean_after"]), name


@pytest.mark.parametrize(
    "override, message",
    [
        ({"train": {"batch_size": 9}, "model": {"mbstd_group_size": 3}}, "model.pl_batch_shrink"),
        ({"train": {"batch_size": 10}, "model": {"pl_batch_shrink": 1}}, "model.mbstd_group_size"),
        ({"loss": {"adversarial": "hinge"}}, "non-saturating logistic"),
        ({"loss": {"gp_lambda": 10.0}}, "loss.r1_gamma"),
        ({"train": {"d_steps": 2}}, "train.d_steps"),
    ],
)
def test_bad_combinations_fail_before_training(override: dict, message: str) -> None:
    model = override.pop("model", {})
    with pytest.raises(ConfigError, match=message):
        _config(model, **override)


def test_phases_follow_the_config_and_state_round_trips() -> None:
    cfg = _config({"pl_weight": 0.0}, loss={"r1_gamma": 0.0})
    family = get_family("stylegan2")(cfg.model, DataSpec(32, 3))
    assert [s.name for s in family.phases(cfg)] == ["Gmain", "Dmain"] and family.state_dict() == {}
    cfg = _config()
    family = get_family("stylegan2")(cfg.model, DataSpec(32, 3))
    family.pl_mean = torch.tensor(0.25)
    other = get_family("stylegan2")(cfg.model, DataSpec(32, 3))
    other.load_state_dict(family.state_dict())
    assert other.pl_mean.item() == 0.25
    with pytest.raises(ValueError, match="pl_mean"):
        other.load_state_dict({"pl_mean": torch.tensor(float("nan"))})


def test_conditional_reads_labels_and_samples_one_class_per_row() -> None:
    cfg = _config({"conditional": True})
    cls = get_family("stylegan2")
    assert cls.data_columns(cfg.model) == ("image", "label")
    assert cls.data_columns(_config().model) == ("image",)
    family = cls(cfg.model, DataSpec(32, 3, num_classes=4))
    G = family.build_networks()["G"].eval()
    inputs = family.sample_inputs(8, torch.Generator().manual_seed(0))
    assert inputs["label"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    images = family.generate(G, inputs)
    assert images.shape == (8, 3, 32, 32)
    grid, per_row = family.panel(inputs, images)
    assert per_row == 2
    # truncation: psi 0 gives every latent of a class the same image
    same = family.generate(G, inputs | {"truncation_psi": torch.tensor(0.0)})
    torch.testing.assert_close(same[0], same[1])


@needs_sg2_reference
def test_init_from_a_converted_official_snapshot(tmp_path) -> None:
    out = tmp_path / "converted"
    result = run(
        [sys.executable, "scripts/convert_stylegan2.py", "--pkl", str(REF / "network-snapshot.pkl"), "--out", str(out)]
    )
    assert result.returncode == 0, result.stderr
    keys = json.loads((out / "config.json").read_text())["distgan"]  # the model.* / data.* the converter names
    assert f"model.init_from={out} model.z_dim=64 " in result.stdout and "data.image_size=32" in result.stdout
    raw = {"model": keys["model"] | {"init_from": str(out)}, "data": {"path": "x"} | keys["data"]}
    cfg = build_config(raw)
    nets = get_family("stylegan2")(cfg.model, DataSpec(32, 3)).build_networks()
    for name in ("G", "D"):
        expected = load_file(REF / f"{name}.safetensors")
        assert all(torch.equal(v, expected[k]) for k, v in nets[name].state_dict().items())
    cfg = _config({"init_from": str(out), "channel_max": 32})  # not the snapshot's network: named, not loaded
    with pytest.raises(ConfigError, match="channel_max"):
        get_family("stylegan2")(cfg.model, DataSpec(32, 3)).build_networks()
    with pytest.raises(ConfigError, match="convert_stylegan2.py"):
        _config({"init_from": str(tmp_path / "nowhere")})


def test_official_keywords_round_trip() -> None:
    """config_from_official inverts kwargs() for other architectures too, and names what it cannot express."""
    from distgan.models.stylegan2 import config_from_official

    model = {
        "family": "stylegan2",
        "z_dim": 32,
        "w_dim": 48,
        "mapping_layers": 8,
        "channel_base": 2048,
        "channel_max": 96,
        "g_architecture": "resnet",
        "d_architecture": "skip",
        "mbstd_group_size": 2,
        "conv_clamp": 256.0,
        "num_fp16_res": 2,
        "cmap_dim": 16,
        "conditional": True,
    }
    cfg = build_config({"model": model, "data": {"path": "x", "image_size": 64, "channels": 1}})
    kwargs = get_family("stylegan2")(cfg.model, DataSpec(64, 1, 10)).kwargs()
    keys = config_from_official(*kwargs)
    assert keys["data"] == {"image_size": 64, "channels": 1, "num_classes": 10}
    assert all(keys["model"][k] == v for k, v in model.items())
    bad = json.loads(json.dumps(kwargs[0]))
    bad["synthesis_kwargs"]["use_noise"] = False
    with pytest.raises(ConfigError, match="synthesis_kwargs"):
        config_from_official(bad, kwargs[1])
