"""torch.compile as a wrapping step: a fixed number of graphs however many steps run (the phases' requires_grad
switches, accumulation, autocast and lazy R1 included), plain checkpoints, and a compiled 2-process run that
resumes uncompiled."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
import torch._dynamo
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

import distgan.train.setup as setup
from distgan.config import build_config
from distgan.family import DataSpec
from distgan.registry import get_family
from distgan.train.loop import build_training, make_step
from distgan.train.setup import Precision, make_accelerator
from tests.conftest import TEST_CONFIGS, assert_ok, launch_train


def _unique_graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_compiled_steps_compile_a_fixed_number_of_graphs(tmp_path: Path, monkeypatch) -> None:
    # aot_eager traces, guards and recompiles exactly like inductor but generates no code: fast on a CPU
    monkeypatch.setattr(setup.torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    raw = {
        "model": {"family": "dcgan", "z_dim": 8, "ngf": 8, "ndf": 8},  # BatchNorm on
        "data": {"path": "unused", "image_size": 16, "channels": 1},
        "train": {"batch_size": 4, "grad_accum": 2, "d_steps": 2, "compile": True, "mixed_precision": "bf16"},
        "loss": {"r1_gamma": 1.0, "r1_every": 3},  # lazy R1 steps run eagerly (no double backward when compiled)
        "augment": {"diffaugment": "color,translation,cutout"},
    }
    cfg = build_config(raw)
    acc = make_accelerator(cfg, str(tmp_path), None)
    try:
        family, nets, phases = build_training(acc, cfg, get_family("dcgan")(cfg.model, DataSpec(16, 1)))
        assert isinstance(nets.frozen["D"], torch._dynamo.eval_frame.OptimizedModule)
        train_step = make_step(acc, cfg, family, nets, phases, Precision("bf16", "cpu", tuple(nets.plain)))
        micro = [{"image": torch.rand(4, 1, 16, 16) * 2 - 1} for _ in range(2)]
        for step in range(3):
            train_step(step, [micro, micro])
        after_warmup = _unique_graphs()
        for step in range(3, 15):
            stats = train_step(step, [micro, micro])
        assert _unique_graphs() == after_warmup, "a later step compiled new graphs: something recompiles per step"
        print(f"graphs compiled: {after_warmup}")
        assert 0 < after_warmup <= 8, after_warmup  # G and D, each with its requires_grad on and off
        assert all(torch.isfinite(v).all() for v in stats.values())
        # the plain modules stay uncompiled and keep their own state-dict names
        assert not any("_orig_mod" in k for k in [*nets.plain["G"].state_dict(), *nets.plain["D"].state_dict()])
    finally:
        AcceleratorState._reset_state(True)
        torch._dynamo.reset()


def test_compiled_two_process_run_checkpoints_plainly_and_resumes_uncompiled(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "run"
    base = ["--config", str(TEST_CONFIGS / "tiny_dcgan.yaml"), f"data.path={digits}", "--output-dir", str(out)]
    result = launch_train([*base, "train.compile=true", "train.max_steps=2"], nproc=2)
    assert_ok(result)
    assert "distgan: first step" in result.stdout and "(torch.compile" in result.stdout
    folder = out / "checkpoints" / "step_000000002"
    for net in ("G", "D", "G_ema"):
        assert not any("_orig_mod" in k for k in load_file(folder / f"{net}.safetensors")), net
    resumed = launch_train([*base, "train.compile=false", "train.max_steps=4", "--resume", "latest"], nproc=1)
    assert_ok(resumed)
    assert json.loads((out / "checkpoints" / "step_000000004" / "state.json").read_text())["step"] == 4
    assert json.loads((out / "generator" / "config.json").read_text())["step"] == 4
