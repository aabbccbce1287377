"""A small dataset decoded once and held in memory as uint8 tensors (`data.cache_mb`).

Streaming decodes every image again in every epoch. For MNIST- or CIFAR-sized data that work competes with
the training step for the CPU (a 2-core machine lost 30% of its training speed to it at 32x32) and a small
dataset has an epoch boundary every few dozen steps. When the transform is the same in every epoch (no random
crop or flip) and the decoded images fit in `data.cache_mb`, each process decodes the split once, in file
order, and draws every epoch from memory; anything larger keeps streaming.

The order has the stream's shape: epoch e is a permutation of all N examples keyed by (seed, e) (file order
when `data.shuffle_buffer` is 0), and rank r of W reads its examples r, r + W, r + 2W, ... (the first
N // W of them, so ranks run the same number of steps). Example k of this rank's batch i is therefore global
sample (i * B + k) * W + r, the layout the trainer keys its noise by: 1 process x B and 2 x B/2 see the same
global batches. Everything depends on (seed, epoch, position) only, so a resume continues exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from distgan.data.transforms import to_float
from distgan.errors import DistganError

IMAGE_KEYS = ("image", "source")  # batch keys holding images (uint8 here, scaled per batch)


class InMemory:
    """Every example of a split as stacked tensors: uint8 images (N, C, H, W) and int64 labels (N,)."""

    def __init__(self, tensors: dict[str, Tensor], path: str) -> None:
        self.tensors = tensors
        self.path = path
        self.size = len(next(iter(tensors.values())))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def order(self, seed: int, epoch: int, shuffle: bool) -> Tensor:
        """Epoch `epoch`'s order of all examples: a permutation keyed by (seed, epoch), or file order."""
        if not shuffle:
            return torch.arange(self.size)
        key = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(key))

    def batches(
        self, batch_size: int, seed: int, rank: int, world_size: int, position: tuple[int, int], shuffle: bool
    ) -> Iterator[tuple[tuple[int, int], dict[str, Tensor]]]:
        """Endless ((epoch, index in epoch), batch) for this rank, from `position` on; images in [-1, 1]."""
        per_rank = self.size // world_size
        count = per_rank // batch_size
        if count == 0:
            raise no_full_batch(self.path, rank, batch_size)
        epoch, skip = position
        while True:
            mine = self.order(seed, epoch, shuffle)[rank::world_size][:per_rank]
            for index in range(skip, count):
                rows = mine[index * batch_size : (index + 1) * batch_size]
                batch = {k: to_float(t[rows]) if k in IMAGE_KEYS else t[rows] for k, t in self.tensors.items()}
                yield (epoch, index), batch
            epoch, skip = epoch + 1, 0


def no_full_batch(path: str, rank: int, batch_size: int) -> DistganError:
    """The error of an epoch too small for one batch of this rank (streamed or in memory)."""
    return DistganError(
        f"data.path={path}: rank {rank} got no full batch of {batch_size} in an epoch; "
        "lower train.batch_size or use more data"
    )
