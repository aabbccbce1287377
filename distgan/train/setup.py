"""Parallelism, precision, memory format and compilation, applied around plain models as separate steps
(torchtitan's habit), in one place and in this order:

1. `make_accelerator`: the process group. On a machine without GPUs, `accelerate launch --multi_gpu`
   only gives real (gloo) DDP when the Accelerator is created with `cpu=True`; we detect that here so
   the user's command is the same everywhere. The group is destroyed at exit whatever the exit
   (`close_process_group_at_exit`).
2. `wrap_models`, on each network the family built (by name):
   a. spectral norm (`train.spectral_norm`) on every Conv/ConvTranspose/Linear (distgan/train/spectral.py);
   b. device and memory format (`train.channels_last`): NHWC weights, so convolutions run in the layout
      the fast kernels want (the inputs are converted as they arrive: `to_device`);
   c. SyncBatchNorm (`train.sync_bn`, CUDA, several processes);
   d. `torch.compile` (`train.compile`) of the plain module: the compiled wrapper shares its parameters,
      so checkpoints, the EMA, sampling and export keep using the plain module (no `_orig_mod.` keys) and
      never run compiled code; a compiled run resumes uncompiled and back;
   e. DDP through `accelerator.prepare`, around the compiled module (DDP's bucketing, `no_sync` and
      hooks stay in Python, outside the compiled graphs). Buffers are not broadcast: D runs twice (real,
      fake) before its backward, and DDP's in-place buffer broadcast in every forward both costs traffic
      and trips autograd's version check on BatchNorm buffers.
3. `Precision`: autocast + one GradScaler per network. Accelerate shares one scaler between optimisers,
   so an fp16 overflow in D would also shrink G's scale; each phase owns its scaler here. Weights and
   optimiser state stay fp32.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs
from torch import nn

from distgan.config import Config
from distgan.errors import ConfigError
from distgan.family import Batch
from distgan.train.spectral import apply_spectral_norm

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
    accelerator = Accelerator(
        cpu=not has_gpu(),
        mixed_precision="no",  # resolved by resolve_mixed_precision and applied by Precision
        log_with=log_with,
        project_dir=run_dir,
        kwargs_handlers=[
            DistributedDataParallelKwargs(broadcast_buffers=False),
            InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.collective_timeout_s)),
        ],
    )
    close_process_group_at_exit()
    return accelerator


def close_process_group_at_exit(grace_s: float = 30.0) -> None:
    """Destroy the process group when the interpreter exits (any exit but a kill), while Python is still whole.

    Torch asks every program to destroy its process group before it exits; a clean finish does so already
    (`Accelerator.end_training`), and then this does nothing. It matters for the other exits (an `error:` exit
    of a running job, evaluate.py, scripts): a gloo group left to interpreter teardown can abort the process
    ("terminate called without an active exception", SIGABRT; pytorch/pytorch#190489). Measured on 2 CPU
    processes: the DDP traffic test's script aborted in 2 of 6 exits without this, 0 of 42 with it; with DDP
    still alive at exit (a module-level global) 3 of 30 still aborted, which `distgan.errors.exit_process`
    (what the entry points end with) prevents. Destroying waits for this process's queued collectives; should
    one hang on a dead peer, the process exits with status 1 after `grace_s`.
    """
    global _close_registered
    if not _close_registered:
        atexit.register(_close_process_group, grace_s)
        _close_registered = True


_close_registered = False


def _close_process_group(grace_s: float) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    timer = threading.Timer(grace_s, _exit_now, (f"the process group did not close within {grace_s:.0f} s",))
    timer.daemon = True
    timer.start()
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001  the process is exiting: never turn its status into a traceback
        pass
    timer.cancel()


def _exit_now(why: str) -> None:
    print(f"error: {why}; exiting", file=sys.stderr, flush=True)
    os._exit(1)


@dataclass
class Nets:
    """The family's networks by name, as each phase calls them, and the plain modules behind them.

    `ddp[name]`: what the phase that updates the network calls (DDP-wrapped, compiled when asked);
    `frozen[name]`: what the other phases call (no DDP, no reducer; compiled when asked);
    `plain[name]`: the modules themselves: weights, optimisers, checkpoints, EMA, sampling, export.
    """

    ddp: dict[str, Callable]
    plain: dict[str, nn.Module]
    frozen: dict[str, Callable] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frozen = {name: self.frozen.get(name, module) for name, module in self.plain.items()}


def wrap_models(accelerator: Accelerator, cfg: Config, networks: dict[str, nn.Module]) -> Nets:
    """Spectral norm, device and memory format, SyncBatchNorm, compile, DDP: in that order (module docstring)."""
    plain, fast = {}, {}
    for name, net in networks.items():
        if cfg.train.spectral_norm in (name, "both"):  # before DDP and before a checkpoint is loaded
            apply_spectral_norm(net)
        net.to(accelerator.device, memory_format=torch.channels_last if cfg.train.channels_last else None)
        if cfg.train.sync_bn and accelerator.num_processes > 1:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        plain[name] = net
        fast[name] = compiled(net, cfg.train.compile)
    with warnings.catch_warnings():
        # torch 2.13 deprecated DDP's broadcast_buffers for forward_sync_buffers, but Accelerate 1.15's
        # DistributedDataParallelKwargs cannot pass the new option; broadcast_buffers=False still does what we
        # want (no buffer broadcast in forward), so only this deprecation notice is silenced, only here.
        warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
        wrapped = accelerator.prepare(*fast.values())
    # A weight with a dimension of size 1 (StyleGAN2's 1-output dense layer) can get a gradient whose stride in
    # that dimension differs from the parameter's: the same memory order, which DDP copies into its bucket
    # (16 numbers) with a warning from inside every backward; only that notice is silenced.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides", category=UserWarning)
    wrapped = wrapped if isinstance(wrapped, tuple) else (wrapped,)
    return Nets(dict(zip(fast, wrapped, strict=True)), plain, fast)


def compiled(module: nn.Module, mode: bool | str) -> Callable:
    """`torch.compile(module)` for `train.compile` true or a mode name; the module itself when false.

    Graphs are compiled at their first call; the phases' requires_grad switches and the eval-mode passes
    of spectral norm give each network a small fixed number of graphs (guarded, then reused)."""
    if mode is False:
        return module
    return torch.compile(module, mode=None if mode is True else mode)


def to_device(batch: Batch, device: torch.device, channels_last: bool) -> Batch:
    """A batch from the data loader on the training device; images (4-D) in channels_last when asked."""
    fmt = torch.channels_last if channels_last else torch.preserve_format
    return {
        k: v.to(device, non_blocking=True, memory_format=fmt if v.dim() == 4 else torch.preserve_format)
        for k, v in batch.items()
    }


@dataclass
class Precision:
    """Autocast dtype for forward passes and one GradScaler per trained network (active for fp16 only)."""

    mode: str
    device_type: str
    networks: tuple[str, ...]  # the trained networks' names (Nets.plain's keys)
    scalers: dict[str, torch.amp.GradScaler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for net in self.networks:
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
