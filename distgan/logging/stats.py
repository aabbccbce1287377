"""Scalar statistics summed on device every step and reduced across ranks only when logged."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import Tensor


class RunningStats:
    """Sums of per-step stats (device tensors); `reduce` averages over steps and ranks in one all-reduce."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.steps = 0

    def add(self, stats: dict[str, Tensor]) -> None:
        for k, v in stats.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.steps += 1

    def reduce(self, accelerator: Accelerator) -> dict[str, float]:
        """Mean over the steps since the last call and over all ranks; resets. Skip counts are summed."""
        if not self.steps:
            return {}
        keys = sorted(self.sums)
        means = torch.stack([self.sums[k] for k in keys]) / self.steps
        means = accelerator.reduce(means, reduction="mean")  # every rank must call this together
        values = dict(zip(keys, means.tolist()))  # the one host sync per log interval
        for k in keys:
            if k.startswith("skipped_"):  # report how many optimiser steps were skipped, not a mean
                values[k] = round(values[k] * self.steps)
        self.sums, self.steps = {}, 0
        return values
