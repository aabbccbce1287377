"""A `datasets` stream of images (and labels/sources) split across ranks, batched by a DataLoader.

Rules learned the hard way (datasets 5.2, accelerate 1.15):
- the DataLoader is NOT passed to `accelerator.prepare`: the stream is already split with
  `split_dataset_by_node`, and doing both drops half the data;
- every rank shuffles with the same seed before splitting, so ranks never overlap, and `set_epoch`
  reshuffles each epoch;
- the stream is endless (epoch after epoch) and training counts steps, so every rank runs the same
  number of steps even when shards divide unevenly (uneven steps would hang DDP).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader

from distgan.config import DataConfig
from distgan.data.source import Source, resolve_source
from distgan.data.transforms import ImageTransform, to_pil
from distgan.errors import DistganError
from distgan.family import Batch, DataSpec

# datasets sleeps this long (an arrow thread-shutdown workaround for interpreter exit) at the end of every
# pass over a multi-shard stream; our passes end mid-run, so ~5 s per epoch would only stall small datasets.
datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0.05


class ImageStream:
    """Opens `data.path` lazily (no download), checks its columns, and yields endless per-rank batches."""

    def __init__(self, cfg: DataConfig, columns: tuple[str, ...], source: Source | None = None) -> None:
        self.cfg = cfg
        self.columns = columns
        self.source = source or resolve_source(cfg.path)
        try:
            self.dataset = datasets.load_dataset(
                self.source.builder, **self.source.kwargs, split=cfg.split, streaming=True
            )
        except ValueError as e:  # e.g. an unknown split
            raise DistganError(f"data.path={cfg.path} ({self.source.description}): {str(e).splitlines()[0]}") from None
        self._check_columns()
        self.spec = DataSpec(cfg.image_size, cfg.channels, self._num_classes())

    # --- what the data offers ------------------------------------------------------------------------
    def _column_names(self) -> list[str]:
        features = self.dataset.features
        if features is not None:
            return list(features)
        return list(next(iter(self.dataset.take(1))).keys())  # formats without a schema: peek at one row

    def _check_columns(self) -> None:
        available = self._column_names()
        for key, column in self._column_map().items():
            if column not in available:
                raise DistganError(
                    f"data.{key}_column={column!r}: no such column in {self.cfg.path} "
                    f"(columns: {', '.join(available)}); set data.{key}_column"
                )

    def _column_map(self) -> dict[str, str]:
        """Batch key -> dataset column for what the family reads."""
        names = {
            "image": self.cfg.image_column,
            "label": self.cfg.label_column,
            "source": self.cfg.source_column or self.cfg.image_column,  # no source column: A|B in one image
        }
        return {key: names[key] for key in self.columns if key in names}

    def _num_classes(self) -> int | None:
        if "label" not in self.columns:
            return None
        if self.cfg.num_classes is not None:
            return self.cfg.num_classes
        feature = (self.dataset.features or {}).get(self.cfg.label_column)
        if isinstance(feature, datasets.ClassLabel):
            return feature.num_classes
        raise DistganError(
            f"data.num_classes: column {self.cfg.label_column!r} of {self.cfg.path} has no class names; "
            "set data.num_classes"
        )

    # --- batches -------------------------------------------------------------------------------------
    def loader(self, batch_size: int, seed: int, rank: int, world_size: int) -> tuple[DataLoader, Any, _Example]:
        """This rank's DataLoader over its part of the stream, the stream (for `set_epoch`) and its transform."""
        columns = self._column_map()
        ds = self.dataset.select_columns(list(dict.fromkeys(columns.values())))
        if self.cfg.shuffle_buffer:
            ds = ds.shuffle(seed=seed, buffer_size=self.cfg.shuffle_buffer)  # same seed on all ranks: disjoint
        ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
        example = _Example(columns, self.cfg, seed, rank)
        ds = ds.map(example, with_indices=True, remove_columns=list(set(columns.values())))
        workers = min(self.cfg.num_workers, ds.num_shards)  # a worker without a shard would sit idle
        loader = DataLoader(
            ds,
            batch_size=batch_size,
            num_workers=workers,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(seed),  # starting an epoch must not draw from the global RNG
            worker_init_fn=_ignore_stop_signals,
        )
        return loader, ds, example

    def batches(
        self, batch_size: int, seed: int, rank: int, world_size: int, position: tuple[int, int] = (0, 0)
    ) -> Iterator[tuple[tuple[int, int], Batch]]:
        """Endless ((epoch, index in epoch), batch) for this rank, reshuffled every epoch; validates labels.

        `position` = (epoch, number of batches of that epoch already used) resumes the stream exactly:
        the shuffle depends only on (seed, epoch) and random crops/flips only on the example, so the
        skipped batches are read again (decoded, not used) and what follows is what would have followed.
        """
        loader, ds, example = self.loader(batch_size, seed, rank, world_size)
        epoch, skip = position
        while True:
            ds.set_epoch(epoch)
            example.epoch = epoch  # DataLoader copies it into the workers when the epoch's iterator starts
            count = 0
            for index, batch in enumerate(loader):
                count += 1
                if index < skip:
                    continue
                self._check_labels(batch)
                yield (epoch, index), batch
            if count == 0:
                raise DistganError(
                    f"data.path={self.cfg.path}: rank {rank} got no full batch of {batch_size} in an epoch; "
                    "lower train.batch_size or use more data"
                )
            epoch, skip = epoch + 1, 0

    def _check_labels(self, batch: Batch) -> None:
        if "label" not in batch:
            return
        labels, n = batch["label"], self.spec.num_classes
        bad = labels[(labels < 0) | (labels >= n)]
        if bad.numel():
            raise DistganError(
                f"data.{self.cfg.label_column}: label {int(bad[0])} is outside [0, {n}); "
                "fix the data or set data.num_classes"
            )


def _ignore_stop_signals(_worker_id: int) -> None:
    """SLURM signals every process of a job step: workers leave SIGTERM/SIGUSR1 to the training process,
    which checkpoints and then shuts them down (they also exit by themselves if it dies)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


class _Example:
    """Picklable per-example transform (runs in DataLoader workers): decode, resize, crop, scale.

    Image-to-image rows give "source" and "image" (the target) from two columns, or from one image
    holding A|B side by side; `data.direction` says which is the source. Random crops and flips draw
    from a generator seeded by (seed, epoch, rank, worker, example index): reproducible after a resume,
    and independent of the training process's global RNG.
    """

    def __init__(self, columns: dict[str, str], cfg: DataConfig, seed: int, rank: int) -> None:
        self.columns, self.channels, self.direction = columns, cfg.channels, cfg.direction
        self.transform = ImageTransform(cfg.image_size, cfg.channels, cfg.load_size, cfg.random_flip)
        self.seed, self.rank, self.epoch = seed, rank, 0

    def __call__(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        gen = None
        if self.transform.random:
            info = torch.utils.data.get_worker_info()
            key = [self.seed, self.epoch, self.rank, info.id if info else 0, index]
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
        image = to_pil(row[self.columns["image"]], self.channels)
        out: dict[str, Any] = {}
        if "source" in self.columns:
            if self.columns["source"] == self.columns["image"]:  # A|B side by side
                w, h = image.size[0] // 2, image.size[1]
                a, b = image.crop((0, 0, w, h)), image.crop((w, 0, 2 * w, h))
            else:
                a, b = to_pil(row[self.columns["source"]], self.channels), image
            source, target = (a, b) if self.direction == "AtoB" else (b, a)
            out["source"], out["image"] = self.transform(source, target, generator=gen)
        else:
            (out["image"],) = self.transform(image, generator=gen)
        if "label" in self.columns:
            out["label"] = torch.tensor(int(row[self.columns["label"]]))
        return out
