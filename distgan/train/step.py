"""One training step: the D phase, then the G phase (stylegan2-ada's phase walk, made explicit).

In each phase only the updated network has `requires_grad` on; the other one is called unwrapped (no
DDP forward, no reducer), so exactly one copy of the updated network's gradients is all-reduced, once
per optimiser step: micro-batches before the last run under `no_sync` (gradient accumulation).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from distgan.family import Batch, Stats
from distgan.train.setup import Precision

LossFn = Callable[[nn.Module, nn.Module, Batch, Tensor], "tuple[Tensor, Stats]"]


@dataclass
class Phase:
    """What one phase updates: the network (DDP-wrapped), its optimiser and the family's loss."""

    name: str  # "G" or "D": also the key of this phase's GradScaler
    loss: LossFn
    optimizer: torch.optim.Optimizer


@dataclass
class Nets:
    """G and D, wrapped (for the phase that updates them) and plain (for the phase that only uses them)."""

    G: nn.Module
    D: nn.Module
    G_plain: nn.Module
    D_plain: nn.Module


def run_phase(
    accelerator: Accelerator,
    precision: Precision,
    nets: Nets,
    phase: Phase,
    micro_batches: list[Batch],
    noise: Callable[[int], Tensor],
) -> Stats:
    """Accumulate the phase's loss over micro-batches, then one (scaled) optimiser step.

    Returns the phase's stats averaged over micro-batches (tensors on device, no host sync), plus
    `skipped_<name>` = 1 when the gradients were non-finite and the optimiser step was skipped.
    """
    updated = nets.G if phase.name == "G" else nets.D
    G, D = (nets.G, nets.D_plain) if phase.name == "G" else (nets.G_plain, nets.D)
    (nets.G_plain if phase.name == "G" else nets.D_plain).requires_grad_(True)
    (nets.D_plain if phase.name == "G" else nets.G_plain).requires_grad_(False)
    scaler = precision.scalers[phase.name]
    n = len(micro_batches)
    totals: Stats = {}
    for i, batch in enumerate(micro_batches):
        sync = i == n - 1  # all-reduce only on the last micro-batch
        with nullcontext() if sync else accelerator.no_sync(updated):
            with precision.autocast():
                loss, stats = phase.loss(G, D, batch, noise(i))
            scaler.scale(loss / n if n > 1 else loss).backward()  # no extra op without accumulation
        for k, v in stats.items():
            v = v / n if n > 1 else v
            totals[k] = totals[k] + v if k in totals else v
    if scaler.is_enabled():  # fp16: the scaler finds inf/nan gradients, skips the step and backs the scale off
        scale_before = scaler._scale.clone()  # the scale as a device tensor (get_scale() would sync the host)
        scaler.step(phase.optimizer)
        scaler.update()
        skipped = (scaler._scale < scale_before).float()
    else:
        skipped = _step_unless_nonfinite(phase.optimizer)
    totals[f"skipped_{phase.name}"] = skipped
    phase.optimizer.zero_grad(set_to_none=True)
    return totals


def _step_unless_nonfinite(optimizer: torch.optim.Optimizer) -> Tensor:
    """Optimiser step, skipped if any gradient is inf/nan; returns 1.0 if skipped (a device tensor).

    Fused optimisers take the verdict as `found_inf` and skip on the device (no host sync, as with
    GradScaler); others fall back to one host sync.
    """
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return torch.zeros(())
    found_inf = (~torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum())).float()
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = found_inf
        optimizer.step()
        del optimizer.found_inf
    elif not found_inf.item():
        optimizer.step()
    return found_inf
