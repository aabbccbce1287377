"""Parallelism and precision, applied around plain models as separate steps (torchtitan's habit).

1. `make_accelerator`: the process group. On a machine without GPUs, `accelerate launch --multi_gpu`
   only gives real (gloo) DDP when the Accelerator is created with `cpu=True`; we detect that here so
   the user's command is the same everywhere.
2. `wrap_models`: optional SyncBatchNorm, then DDP through `accelerator.prepare`. Buffers are not
   broadcast: D runs twice (real, fake) before its backward, and DDP's in-place buffer broadcast in
   every forward both costs traffic and trips autograd's version check on BatchNorm buffers.
3. `Precision`: autocast + one GradScaler per network. Accelerate shares one scaler between optimisers,
   so an fp16 overflow in D would also shrink G's scale; each phase owns its scaler here. Weights and
   optimiser state stay fp32.
"""

from __future__ import annotations

import os
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs
from torch import nn

from distgan.config import Config
from distgan.errors import ConfigError

DTYPES = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def has_gpu() -> bool:
    """True where Accelerate would pick an accelerator device (CUDA, XPU, MPS)."""
    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(xpu and xpu.is_available()) or bool(mps and mps.is_available())


def resolve_mixed_precision(cfg: Config) -> str:
    """The config's `train.mixed_precision`, else `accelerate launch --mixed_precision` (env), else "no"."""
    value = cfg.train.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if value not in DTYPES:
        raise ConfigError(f"train.mixed_precision: must be one of no, fp16, bf16; got {value!r} (from accelerate)")
    return value


def check_runtime(cfg: Config) -> None:
    """Config values that are valid YAML but impossible on this machine; raised before any process group."""
    if cfg.train.sync_bn and not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "train.sync_bn: SyncBatchNorm needs CUDA GPUs; on CPU set train.sync_bn=false (or use a BN-free model)"
        )


def make_accelerator(cfg: Config, run_dir: str, log_with: str | None) -> Accelerator:
    """The Accelerator for this process: real DDP on CPU too; precision is handled by `Precision`."""
    return Accelerator(
        cpu=not has_gpu(),
        mixed_precision="no",  # resolved by resolve_mixed_precision and applied by Precision
        log_with=log_with,
        project_dir=run_dir,
        kwargs_handlers=[
            DistributedDataParallelKwargs(broadcast_buffers=False),
            InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.collective_timeout_s)),
        ],
    )


def wrap_models(accelerator: Accelerator, cfg: Config, G: nn.Module, D: nn.Module) -> tuple[nn.Module, nn.Module]:
    """SyncBatchNorm (if asked and distributed), device placement and DDP."""
    if cfg.train.sync_bn and accelerator.num_processes > 1:
        G = nn.SyncBatchNorm.convert_sync_batchnorm(G)
        D = nn.SyncBatchNorm.convert_sync_batchnorm(D)
    with warnings.catch_warnings():
        # torch 2.13 deprecated DDP's broadcast_buffers for forward_sync_buffers, but Accelerate 1.15's
        # DistributedDataParallelKwargs cannot pass the new option; broadcast_buffers=False still does what we
        # want (no buffer broadcast in forward), so only this deprecation notice is silenced, only here.
        warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
        return accelerator.prepare(G, D)


@dataclass
class Precision:
    """Autocast dtype for forward passes and one GradScaler per network (active for fp16 only)."""

    mode: str
    device_type: str
    scalers: dict[str, torch.amp.GradScaler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for net in ("G", "D"):
            self.scalers[net] = torch.amp.GradScaler(self.device_type, enabled=self.mode == "fp16")

    def loss_scale(self, name: str, device: torch.device) -> torch.Tensor | None:
        """Network `name`'s current fp16 loss scale as a device tensor (no host sync), or None without fp16.

        Penalties take their input gradient of the scaled output (distgan/losses/penalties.py); the scale
        exists before the phase's first backward, so it is created here as GradScaler would create it."""
        scaler = self.scalers[name]
        if not scaler.is_enabled():
            return None
        if scaler._scale is None:
            scaler._lazy_init_scale_growth_tracker(device)
        return scaler._scale

    def autocast(self) -> AbstractContextManager:
        """Forward-pass context: lower-precision matmuls/convs; losses are computed in fp32 by autocast."""
        return torch.autocast(self.device_type, dtype=DTYPES[self.mode] or torch.float32, enabled=self.mode != "no")
