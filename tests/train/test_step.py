"""The phase step in one process: which network gets gradients, fp16 skips, gradient accumulation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from accelerate.state import AcceleratorState

from distgan.config import build_config
from distgan.family import DataSpec
from distgan.losses.recipe import Recipe
from distgan.registry import get_family
from distgan.train.loop import build_training
from distgan.train.setup import Precision, make_accelerator
from distgan.train.step import Layout, TrainStep, run_phase


@pytest.fixture
def setup(tmp_path):
    def make(**train):
        raw = {
            "model": {"family": "dcgan", "z_dim": 8, "ngf": 8, "ndf": 8, "norm": "none"},
            "data": {"path": "unused", "image_size": 16, "channels": 1},
            "train": train,
        }
        cfg = build_config(raw)
        acc = make_accelerator(cfg, str(tmp_path), None)
        family = get_family("dcgan")(cfg.model, DataSpec(16, 1))
        return (acc, cfg, *build_training(acc, cfg, family))

    yield make
    AcceleratorState._reset_state(True)


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def _step(acc, family, nets, phases, precision, micro, batch, accum=1, step=0):
    """One training step of the framework's own TrainStep (both phases) on these micro-batches."""
    train_step = TrainStep(acc, precision, nets, phases, Recipe(), family.z_dim, 16, 0, Layout(batch, accum))
    return train_step(step, [micro])


def _inputs(acc, family, nets, phases, precision, batch, phase="D"):
    return TrainStep(acc, precision, nets, phases, Recipe(), family.z_dim, 16, 0, Layout(batch)).inputs(
        phases[0 if phase == "D" else 1].spec, (0,)
    )


def _times(phase, factor: str):
    """The phase's loss multiplied by inf or nan: its network's gradients become non-finite."""

    def loss(nets, batch, z, ctx):
        value, stats = phase.spec.loss(nets, batch, z, ctx)
        return value * float(factor), stats

    return loss


def test_each_phase_updates_only_its_network(setup) -> None:
    acc, cfg, family, nets, phases = setup()
    precision = Precision("no", "cpu", ("G", "D"))
    batch = [{"image": torch.rand(4, 1, 16, 16) * 2 - 1}]
    g0, d0 = _params(nets.plain["G"]), _params(nets.plain["D"])
    inputs = _inputs(acc, family, nets, phases, precision, 4)
    stats = run_phase(acc, precision, nets, phases[0], batch, inputs)  # D phase
    assert _changed(d0, nets.plain["D"]) and not _changed(g0, nets.plain["G"])
    assert all(p.grad is None for p in nets.plain["G"].parameters()), "G got gradients in the D phase"
    assert set(stats) == {"loss_d", "d_real", "d_fake", "real_sign", "skipped_D"} and stats["skipped_D"].item() == 0
    d1 = _params(nets.plain["D"])
    stats = run_phase(acc, precision, nets, phases[1], batch, _inputs(acc, family, nets, phases, precision, 4, "G"))
    assert _changed(g0, nets.plain["G"]) and not _changed(d1, nets.plain["D"])
    assert all(p.grad is None for p in nets.plain["D"].parameters()), "D got gradients in the G phase"
    assert set(stats) == {"loss_g", "skipped_G"} and stats["skipped_G"].item() == 0


def test_fp16_overflow_skips_only_that_network(setup) -> None:
    acc, cfg, family, nets, phases = setup(mixed_precision="fp16")
    precision = Precision("fp16", "cpu", ("G", "D"))
    poisoned = dataclasses.replace(phases[0], spec=dataclasses.replace(phases[0].spec, loss=_times(phases[0], "inf")))
    batch = [{"image": torch.rand(4, 1, 16, 16) * 2 - 1}]
    g0, d0 = _params(nets.plain["G"]), _params(nets.plain["D"])
    stats = _step(acc, family, nets, [poisoned, phases[1]], precision, batch, 4)
    assert stats["skipped_D"].item() == 1 and stats["skipped_G"].item() == 0
    assert not _changed(d0, nets.plain["D"]), "D stepped on non-finite gradients"
    assert _changed(g0, nets.plain["G"]), "G's step was lost because D overflowed"
    assert precision.scalers["G"].get_scale() == 65536.0 and precision.scalers["D"].get_scale() == 32768.0
    assert all(torch.isfinite(p).all() for p in [*nets.plain["G"].parameters(), *nets.plain["D"].parameters()])


def test_gradient_accumulation_equals_the_full_batch(setup) -> None:
    images = torch.rand(8, 1, 16, 16) * 2 - 1
    acc, cfg, family, nets, phases = setup()
    _step(acc, family, nets, phases, Precision("no", "cpu", ("G", "D")), [{"image": images}], 8)
    full = _params(nets.plain["G"]) + _params(nets.plain["D"])
    AcceleratorState._reset_state(True)
    acc, cfg, family, nets, phases = setup(grad_accum=2)
    micro = [{"image": images[:4]}, {"image": images[4:]}]
    _step(acc, family, nets, phases, Precision("no", "cpu", ("G", "D")), micro, 4, accum=2)
    accumulated = _params(nets.plain["G"]) + _params(nets.plain["D"])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(full, accumulated))


def test_bf16_step_keeps_fp32_weights(setup) -> None:
    acc, cfg, family, nets, phases = setup(mixed_precision="bf16")
    stats = _step(
        acc, family, nets, phases, Precision("bf16", "cpu", ("G", "D")), [{"image": torch.rand(4, 1, 16, 16)}], 4
    )
    assert all(torch.isfinite(v) for v in stats.values())
    assert all(p.dtype == torch.float32 for p in [*nets.plain["G"].parameters(), *nets.plain["D"].parameters()])


@pytest.mark.parametrize("mode", ["no", "bf16"])
def test_nonfinite_gradients_skip_the_step_without_fp16(setup, mode: str) -> None:
    acc, cfg, family, nets, phases = setup(mixed_precision=mode)
    poisoned = dataclasses.replace(phases[1], spec=dataclasses.replace(phases[1].spec, loss=_times(phases[1], "nan")))
    batch = [{"image": torch.rand(4, 1, 16, 16)}]
    _step(acc, family, nets, phases, Precision(mode, "cpu", ("G", "D")), batch, 4)  # one good step: Adam has state
    g0 = _params(nets.plain["G"])
    adam_steps = [s["step"].clone() for s in phases[1].optimizer.state.values()]
    stats = _step(acc, family, nets, [phases[0], poisoned], Precision(mode, "cpu", ("G", "D")), batch, 4, step=1)
    assert stats["skipped_G"].item() == 1 and stats["skipped_D"].item() == 0
    assert not _changed(g0, nets.plain["G"]), "G stepped on nan gradients"
    assert all(torch.isfinite(s["exp_avg"]).all() for s in phases[1].optimizer.state.values())
    assert adam_steps and [s["step"] for s in phases[1].optimizer.state.values()] == adam_steps
