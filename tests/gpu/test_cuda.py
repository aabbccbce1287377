"""CUDA-only checks (marked `cuda`; they skip on a machine without a GPU, saying so). scripts/gpu_check.sh runs
them on a GPU: the step at every precision with the fast path on, compiled training's graph count, and a
checkpoint round trip on the device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo
from accelerate.state import AcceleratorState

from distgan.config import build_config
from distgan.family import DataSpec
from distgan.registry import get_family
from distgan.train import checkpoint as ckpt
from distgan.train.loop import build_training, make_step
from distgan.train.setup import Precision, make_accelerator

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh runs these)"),
]


def _training(tmp_path: Path, **train):
    raw = {
        "model": {"family": "dcgan", "z_dim": 16, "ngf": 16, "ndf": 16},
        "data": {"path": "unused", "image_size": 32, "channels": 3},
        "train": {"batch_size": 8, **train},
        "log": {"wandb": "off"},
    }
    cfg = build_config(raw)
    acc = make_accelerator(cfg, str(tmp_path), None)
    assert acc.device.type == "cuda"
    family, nets, phases = build_training(acc, cfg, get_family("dcgan")(cfg.model, DataSpec(32, 3)))
    precision = Precision(cfg.train.mixed_precision or "no", "cuda", ("G", "D"))
    return cfg, acc, family, nets, phases, precision, make_step(acc, cfg, family, nets, phases, precision)


def _batch(channels_last: bool) -> list[dict[str, torch.Tensor]]:
    image = torch.rand(8, 3, 32, 32, device="cuda") * 2 - 1
    return [{"image": image.contiguous(memory_format=torch.channels_last) if channels_last else image}]


@pytest.fixture(autouse=True)
def _reset():
    yield
    AcceleratorState._reset_state(True)
    torch._dynamo.reset()


@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_steps_are_finite_keep_fp32_weights_and_the_memory_format(tmp_path: Path, precision, channels_last) -> None:
    cfg, acc, family, nets, phases, prec, step = _training(
        tmp_path, mixed_precision=precision, channels_last=channels_last, d_steps=2
    )
    for i in range(5):
        stats = step(i, [_batch(channels_last), _batch(channels_last)])
    torch.cuda.synchronize()
    assert all(torch.isfinite(v).all() for v in stats.values())
    assert stats["skipped_D"].item() == 0 or precision == "fp16"  # fp16 may skip while the scale settles
    weights = [p for p in nets.plain["D"].parameters() if p.dim() == 4]
    assert all(p.dtype == torch.float32 for p in nets.plain["D"].parameters())
    assert all(p.is_contiguous(memory_format=torch.channels_last) == channels_last for p in weights)


def test_compiled_training_on_cuda_compiles_a_fixed_number_of_graphs(tmp_path: Path) -> None:
    torch._dynamo.reset()
    *_, step = _training(tmp_path, mixed_precision="bf16", compile=True, grad_accum=2)
    micro = _batch(True) + _batch(True)
    for i in range(3):
        step(i, [micro])
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for i in range(3, 20):
        stats = step(i, [micro])
    torch.cuda.synchronize()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs <= 8
    assert all(torch.isfinite(v).all() for v in stats.values())


def test_checkpoint_round_trip_on_cuda_continues_like_the_uninterrupted_run(tmp_path: Path) -> None:
    """4 steps straight vs 2 steps, weights and Adam state through safetensors files, 2 more steps in a new
    set of networks (channels_last, bf16): the same G (cuDNN made deterministic for the comparison)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    batches = [_batch(True) for _ in range(4)]
    *_, nets, phases, _, step = _training(tmp_path / "a", mixed_precision="bf16")
    for i in range(4):
        step(i, [batches[i]])
    straight = {k: v.clone() for k, v in nets.plain["G"].state_dict().items()}
    AcceleratorState._reset_state(True)
    *_, nets, phases, _, step = _training(tmp_path / "b", mixed_precision="bf16")
    for i in range(2):
        step(i, [batches[i]])
    for name, module, opt in (("G", nets.plain["G"], phases[1].optimizer), ("D", nets.plain["D"], phases[0].optimizer)):
        ckpt.save_tree(module.state_dict(), tmp_path, name)
        ckpt.save_tree(opt.state_dict(), tmp_path, f"opt_{name}")
    AcceleratorState._reset_state(True)
    *_, nets, phases, _, step = _training(tmp_path / "c", mixed_precision="bf16")
    for name, module, opt in (("G", nets.plain["G"], phases[1].optimizer), ("D", nets.plain["D"], phases[0].optimizer)):
        module.load_state_dict(ckpt.load_tree(tmp_path, name))
        opt.load_state_dict(ckpt.load_tree(tmp_path, f"opt_{name}"))
        ckpt.match_param_layout(opt)
    for i in range(2, 4):
        step(i, [batches[i]])
    worst = max((straight[k].float() - v.float()).abs().max().item() for k, v in nets.plain["G"].state_dict().items())
    assert worst < 1e-5, worst
