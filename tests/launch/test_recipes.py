"""Recipes from the config, as users run them: each loss trains, spectral norm survives checkpoint -> resume ->
export -> sample, and bad combinations are one line before anything starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distgan.config import load_config
from distgan.data import ImageStream
from distgan.errors import ConfigError, DistganError
from distgan.losses.recipe import Recipe
from distgan.registry import get_family
from distgan.sampling import load_generator
from distgan.train.checkpoint import check_compatible
from distgan.train.loop import build_training, make_step
from distgan.train.setup import Precision, make_accelerator
from distgan.train.spectral import SPECTRAL_LAYERS, apply_spectral_norm, spectral_layers
from launch.sample import main as sample_main
from tests.conftest import TEST_CONFIGS, assert_ok, launch_train, run

TINY_DCGAN = str(TEST_CONFIGS / "tiny_dcgan.yaml")


@pytest.mark.parametrize("adversarial", ["bce", "hinge", "wgan", "lsgan"])
def test_each_loss_trains_dcgan_on_the_digits_without_a_nonfinite_step(tmp_path: Path, digits: Path, adversarial):
    """The framework's own step (TrainStep) for 200 steps on the streamed real digits, per loss; wgan with its
    gradient penalty as in WGAN-GP. D must learn something (its loss moves), and no step may be skipped."""
    from accelerate.state import AcceleratorState

    extra = ["loss.gp_lambda=10", "train.betas=[0.0,0.9]"] if adversarial == "wgan" else []
    overrides = [f"data.path={digits}", "data.num_workers=0", f"loss.adversarial={adversarial}", *extra]
    cfg = load_config(TINY_DCGAN, overrides)
    stream = ImageStream(cfg.data, ("image",))
    acc = make_accelerator(cfg, str(tmp_path), None)
    try:
        family, nets, phases = build_training(acc, cfg, get_family("dcgan")(cfg.model, stream.spec))
        train_step = make_step(acc, cfg, family, nets, phases, Precision("no", "cpu", tuple(nets.plain)))
        batches = stream.batches(cfg.train.batch_size, 0, 0, 1)
        losses, skipped = [], 0.0
        for step in range(200):
            stats = train_step(step, [[next(batches)[1]]])
            losses.append(stats["loss_d"].item())
            skipped += stats["skipped_D"].item() + stats["skipped_G"].item()
    finally:
        AcceleratorState._reset_state(True)
    assert skipped == 0 and all(map(torch.isfinite, map(torch.tensor, losses))), adversarial
    early, late = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert abs(late - early) > 1e-3, f"{adversarial}: D's loss did not move ({early:.4f} -> {late:.4f})"


def test_spectral_norm_where_asked_survives_resume_export_and_sampling(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "run"
    base = ["--config", TINY_DCGAN, f"data.path={digits}", "--output-dir", str(out), "train.spectral_norm=G"]
    assert_ok(launch_train([*base, "train.max_steps=2"]))
    assert_ok(launch_train([*base, "train.max_steps=4", "--resume", "latest"]))
    folder = out / "checkpoints" / "step_000000004"
    g, d = load_file(folder / "G.safetensors"), load_file(folder / "D.safetensors")
    assert any(".parametrizations.weight.original" in k for k in g) and any(k.endswith("weight.0._u") for k in g)
    assert not any("parametrizations" in k for k in d), "spectral norm on D, which was not asked for"
    # the export is the plain network: it loads into the family's G as built and draws what the SN G_ema draws
    family, exported = load_generator(out / "generator")
    assert not any("parametrizations" in k for k in exported.state_dict())
    torch.manual_seed(0)
    with_sn = apply_spectral_norm(family.build_generator())
    assert spectral_layers(with_sn) == [m for m in with_sn.modules() if isinstance(m, SPECTRAL_LAYERS)]
    with_sn.load_state_dict(load_file(folder / "G_ema.safetensors"))
    z = torch.randn(6, family.z_dim)
    with torch.no_grad():
        assert torch.allclose(exported.eval()(z), with_sn.eval()(z), atol=1e-6)
    png = tmp_path / "s.png"
    assert sample_main(["--generator", str(out / "generator"), "--out", str(png)]) == 0
    assert png.stat().st_size > 0
    # resuming with spectral norm changed is refused, naming the key (checked before any process group starts)
    changed = load_config(TINY_DCGAN, [f"data.path={digits}", "train.spectral_norm=none"])
    with pytest.raises(
        DistganError, match="saved with train.spectral_norm=G, but this run has train.spectral_norm=none"
    ):
        check_compatible(folder, changed)


BAD_RECIPES = [
    ("train.d_steps=0", "train.d_steps: must be >= 1"),
    ("augment.diffaugment=color,flip", "augment.diffaugment: unknown policy 'flip' (choose from color, translation"),
    ("loss.adversarial=wgan-gp", "loss.adversarial: unknown loss 'wgan-gp' (choose one of bce, hinge, wgan, lsgan)"),
    ("loss.r1_every=0", "loss.r1_every: must be in [1, 10000]"),
    ("loss.r1_gamma=-1", "loss.r1_gamma: must be in [0, 1000000.0] (0: off)"),
    ("train.spectral_norm=all", "train.spectral_norm: must be one of 'none', 'D', 'G', 'both'"),
    ("loss.gp_lambda=nan", "loss.gp_lambda: must be a finite number"),
]


@pytest.mark.parametrize("override, message", BAD_RECIPES)
def test_bad_recipe_settings_are_config_errors_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(TINY_DCGAN, ["data.path=unused", override])
    assert str(error.value).startswith(f"command-line override: {message}"), str(error.value)


def test_a_bad_recipe_is_one_line_from_the_entry_point_before_anything_starts(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "launch/train.py", "--config", TINY_DCGAN, "data.path=unused", "train.d_steps=0"]
    result = run([*cmd, "--output-dir", str(out)])
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip().splitlines() == ["error: command-line override: train.d_steps: must be >= 1, got 0"]


def test_family_defaults_resolve_into_the_config() -> None:
    sngan = load_config(str(TEST_CONFIGS / "tiny_sngan.yaml"), ["data.path=unused"])
    assert (sngan.loss.adversarial, sngan.train.spectral_norm) == ("hinge", "D")
    off = load_config(str(TEST_CONFIGS / "tiny_sngan.yaml"), ["data.path=unused", "train.spectral_norm=none"])
    assert off.train.spectral_norm == "none"
    dcgan = load_config(TINY_DCGAN, ["data.path=unused"])
    assert (dcgan.loss.adversarial, dcgan.train.spectral_norm) == ("bce", "none")
    assert Recipe.from_config(dcgan) == Recipe()
