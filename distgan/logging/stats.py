"""Scalar statistics summed on device every step and reduced across ranks only when logged."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import Tensor


class RunningStats:
    """Sums of per-step stats (device tensors); `reduce` averages over steps and ranks in one all-reduce.

    A step's stats are stacked into one vector and added in one kernel (not one per stat: on a GPU each
    launch costs more than the arithmetic). A stat that only some steps report (R1 on lazy-R1 steps) is
    averaged over the steps that reported it.
    """

    def __init__(self) -> None:
        self.groups: dict[tuple[str, ...], tuple[Tensor, int]] = {}  # stat names -> (sum vector, steps)

    def add(self, stats: dict[str, Tensor]) -> None:
        keys = tuple(stats)
        vector = torch.stack([v.detach().float().reshape(()) for v in stats.values()])
        if keys in self.groups:
            total, steps = self.groups[keys]
            self.groups[keys] = (total.add_(vector), steps + 1)  # the first sum is a fresh stack: ours to modify
        else:
            self.groups[keys] = (vector, 1)

    def reduce(self, accelerator: Accelerator) -> dict[str, float]:
        """Mean over the steps since the last call and over all ranks; resets. Skip counts are summed."""
        if not self.groups:
            return {}
        sums: dict[str, Tensor] = {}
        steps: dict[str, int] = {}
        for keys, (total, n) in self.groups.items():
            for k, v in zip(keys, total.unbind()):
                sums[k] = sums[k] + v if k in sums else v
                steps[k] = steps.get(k, 0) + n
        keys = sorted(sums)
        means = torch.stack([sums[k] / steps[k] for k in keys])
        means = accelerator.reduce(means, reduction="mean")  # every rank must call this together
        values = dict(zip(keys, means.tolist()))  # the one host sync per log interval
        for k in keys:
            if k.startswith("skipped_"):  # report how many optimiser steps were skipped, not a mean
                values[k] = round(values[k] * steps[k])
        self.groups = {}
        return values
