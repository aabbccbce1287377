"""One training step: every phase the family declares, in order (stylegan2-ada's phase walk, made explicit).

In each phase only the updated network has `requires_grad` on; the others are called unwrapped (no DDP
forward, no reducer), so exactly one copy of the updated network's gradients is all-reduced, once per
optimiser step: micro-batches before the last run under `no_sync` (gradient accumulation). A phase with an
interval k runs on every k-th step only, its loss weighted by k (lazy regularisation).

Randomness is keyed, not streamed: each phase of each step seeds one device generator from (seed, step,
phase, repeat) and draws the whole global batch's latents, recipe draws (DiffAugment parameters, GP
weights) and the family's own draws; every micro-batch takes its own samples out of them (`Layout`). So
1 process x B, 2 processes x B/2 and 1 process x B/2 x 2 accumulation train on the same samples, and a
resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor

from distgan.family import Batch, PhaseSpec, Stats
from distgan.losses.recipe import PhaseContext, Recipe, draw, take_draws
from distgan.train.setup import Nets, Precision

MicroInputs = Callable[[int], "tuple[Tensor, PhaseContext]"]  # micro-batch index -> (latents, context)


@dataclass
class Phase:
    """A family's phase (`PhaseSpec`) with the optimiser of the network it updates."""

    spec: PhaseSpec
    optimizer: torch.optim.Optimizer

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def updates(self) -> str:
        """The network this phase trains: also the key of its GradScaler, optimiser and `skipped_<name>`."""
        return self.spec.updates

    @property
    def repeats(self) -> int:
        return self.spec.repeats


@dataclass(frozen=True)
class Layout:
    """Where this rank's micro-batches sit in a step's global batch of accum x batch x world samples.

    Sample k of micro-batch i on rank r is global sample (i * batch + k) * world + r: the order in which
    `split_dataset_by_node` interleaves a stream's examples over ranks, so the latents, augmentation and GP
    weights of a global sample travel with the same real example whatever the number of processes.
    """

    batch: int
    accum: int = 1
    world: int = 1
    rank: int = 0

    @property
    def total(self) -> int:
        return self.accum * self.batch * self.world

    def shrunk(self, divisor: int) -> Layout:
        """The layout of a phase that takes 1/divisor of each micro-batch (divisor divides the batch)."""
        return self if divisor == 1 else Layout(self.batch // divisor, self.accum, self.world, self.rank)

    def take(self, t: Tensor, i: int) -> Tensor:
        """Micro-batch i's rows (batch, ...) of a global-batch tensor (total, ...)."""
        return t.view(self.accum, self.batch, self.world, *t.shape[1:])[i, :, self.rank].contiguous()


def seed_from(key: tuple[int, ...]) -> int:
    """A 64-bit generator seed from a key of integers (independent streams for neighbouring keys)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0] >> 1)


class TrainStep:
    """One optimiser step of every phase due: `TrainStep(...)(step, groups)` -> stats (device tensors, no
    host sync).

    `groups`: one list of `layout.accum` micro-batches per repeat of the most repeated phase (train.d_steps);
    a phase with fewer repeats takes the last groups (its labels or sources; its fakes are new).
    """

    def __init__(
        self,
        acc: Accelerator,
        precision: Precision,
        nets: Nets,
        phases: list[Phase],
        recipe: Recipe,
        z_dim: int,
        image_size: int,
        seed: int,
        layout: Layout,
    ) -> None:
        self.acc, self.precision, self.nets, self.phases = acc, precision, nets, phases
        self.recipe, self.z_dim, self.seed, self.layout = recipe, z_dim, seed, layout
        self.size = (image_size, image_size)
        self.gen = torch.Generator(device=acc.device)

    def __call__(self, step: int, groups: list[list[Batch]]) -> Stats:
        stats: Stats = {}
        for index, phase in enumerate(self.phases):
            if step % phase.spec.interval:
                continue
            runs: list[Stats] = []
            for j in range(phase.repeats):
                r1_step = phase.spec.lazy_r1 and self.recipe.is_r1_step(step * phase.repeats + j)
                inputs = self.inputs(phase.spec, (self.seed, step, index, j), r1_step)
                batches = groups[min(j, len(groups) - 1)]
                runs.append(run_phase(self.acc, self.precision, self.nets, phase, batches, inputs))
            stats = _merge(stats, runs[0] if len(runs) == 1 else _over_repeats(runs))
        return stats

    def inputs(self, spec: PhaseSpec, key: tuple[int, ...], r1_step: bool = False) -> MicroInputs:
        """(latents, context) of micro-batch i for one phase: the global batch drawn from a generator seeded by
        `key`, latents first (so switching augmentation on does not change them), then the recipe's draws,
        then the family's own."""
        layout, device = self.layout.shrunk(spec.batch_divisor), self.acc.device
        self.gen.manual_seed(seed_from(key))
        z = torch.randn(layout.total, self.z_dim, generator=self.gen, device=device)
        draws = draw(self.recipe, self.gen, None, layout.total, self.size, device, spec.draws)
        if spec.extra_draws is not None:
            draws |= spec.extra_draws(layout.total, self.gen, device)
        penalties = spec.draws == "critic" and (r1_step or self.recipe.gp_lambda > 0)
        scale = self.precision.loss_scale(spec.updates, device) if penalties or spec.double_backward else None
        mean = functools.partial(global_mean, self.acc.num_processes)

        def at(i: int) -> tuple[Tensor, PhaseContext]:
            mine = take_draws(draws, lambda t: layout.take(t, i)) if draws else {}
            return layout.take(z, i), PhaseContext(self.recipe, mine, r1_step, scale, mean)

        return at


def global_mean(world: int, t: Tensor) -> Tensor:
    """The mean of `t` over all processes, differentiable (its backward all-reduces the gradient, so that a
    loss through it has the gradient it would have on one process); `t` itself on one process."""
    if world == 1:
        return t
    return _AllReduceSum.apply(t) / world


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward sums the gradients over processes (each rank's loss reads every rank's
    input); torch.distributed.nn.functional.all_reduce does the same but is deprecated."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:  # noqa: ANN001
        out = t.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


def _merge(stats: Stats, new: Stats) -> Stats:
    """Stats of the phases so far and of one more: a skip if any phase of that network skipped."""
    out = dict(stats)
    for key, value in new.items():
        out[key] = torch.maximum(out[key], value) if key.startswith("skipped_") and key in out else value
    return out


def _over_repeats(runs: list[Stats]) -> Stats:
    """Stats of a repeated phase: each the mean over the repeats that report it; a skip if any repeat skipped."""
    out: Stats = {}
    for key in dict.fromkeys(k for run in runs for k in run):
        values = [run[key] for run in runs if key in run]
        out[key] = torch.stack(values).amax() if key.startswith("skipped_") else torch.stack(values).mean()
    return out


def run_phase(
    accelerator: Accelerator,
    precision: Precision,
    nets: Nets,
    phase: Phase,
    micro_batches: list[Batch],
    inputs: MicroInputs,
) -> Stats:
    """Accumulate the phase's loss over micro-batches, then one (scaled) optimiser step.

    `inputs(i)`: micro-batch i's latents and context. Returns the phase's stats averaged over micro-batches
    (tensors on device, no host sync), plus `skipped_<name>` = 1 when the gradients were non-finite and the
    optimiser step was skipped.
    """
    spec = phase.spec
    updated = nets.ddp[spec.updates]
    view = {spec.updates: updated} | {name: nets.frozen[name] for name in spec.reads}
    for name, module in nets.plain.items():
        module.requires_grad_(name == spec.updates)
    scaler = precision.scalers[spec.updates]
    n = len(micro_batches)
    weight = spec.interval / n  # lazy regularisation's gain k, and the mean over micro-batches
    totals: Stats = {}
    for i, batch in enumerate(micro_batches):
        sync = i == n - 1  # all-reduce only on the last micro-batch
        z, ctx = inputs(i)
        with nullcontext() if sync else accelerator.no_sync(updated):
            with precision.autocast(), eager_if(ctx.double_backward or spec.double_backward):
                loss, stats = spec.loss(view, _rows(batch, spec.batch_divisor), z, ctx)
            scaler.scale(loss * weight if weight != 1 else loss).backward()  # no extra op in the plain case
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
    totals[f"skipped_{spec.updates}"] = skipped
    phase.optimizer.zero_grad(set_to_none=True)
    return totals


def _rows(batch: Batch, divisor: int) -> Batch:
    """The first 1/divisor of a micro-batch's samples (a phase with `batch_divisor`)."""
    if divisor == 1:
        return batch
    return {k: v[: v.shape[0] // divisor] for k, v in batch.items()}


@functools.cache
def _one(device: torch.device) -> Tensor:
    """The "inverse scale" 1.0 of the non-finite check, made once per device."""
    return torch.ones(1, device=device)


def eager_if(condition: bool) -> AbstractContextManager:
    """Run compiled networks eagerly inside (torch.compile has no double backward, which R1 and GP take).

    A whole D step goes eager, not only the penalty's pass: BatchNorm's saved running statistics would
    otherwise be modified in place by a compiled pass between an eager pass and its backward."""
    return torch.compiler.set_stance("force_eager") if condition else nullcontext()


def _step_unless_nonfinite(optimizer: torch.optim.Optimizer) -> Tensor:
    """Optimiser step, skipped if any gradient is inf/nan; returns 1.0 if skipped (a device tensor).

    The check is GradScaler's own multi-tensor kernel with a scale of 1 (one launch for all gradients).
    Fused optimisers take the verdict as `found_inf` and skip on the device (no host sync, as with
    GradScaler); others fall back to one host sync.
    """
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return torch.zeros(())
    found = torch.zeros(1, device=grads[0].device)
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found, _one(found.device))
    found_inf = found.view(())  # the shape fused Adam's step counters take
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = found_inf
        optimizer.step()
        del optimizer.found_inf
    elif not found_inf.item():
        optimizer.step()
    return found_inf
