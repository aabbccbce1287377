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

import atexit
import multiprocessing
import multiprocessing.util  # its exit hook is registered on import; ours (kill_workers) must come later
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from datasets.distributed import split_dataset_by_node
from PIL import Image
from torch.utils.data import DataLoader

from distgan.config import DataConfig
from distgan.data.memory import IMAGE_KEYS, InMemory, no_full_batch
from distgan.data.source import IMAGE_SUFFIXES, Source, hub_offline, not_cached, resolve_source
from distgan.data.transforms import ImageTransform, to_float, to_pil
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
        for file in self.source.parquet_files():  # a damaged footer would only fail later, in a worker
            try:
                pq.read_metadata(file)
            except (pa.ArrowException, OSError) as e:
                raise _damaged(cfg.path, file, e) from None
        try:
            self.dataset = datasets.load_dataset(
                self.source.builder, **self.source.kwargs, split=cfg.split, streaming=True
            )
        except ValueError as e:  # e.g. an unknown split
            raise DistganError(f"data.path={cfg.path} ({self.source.description}): {str(e).splitlines()[0]}") from None
        except ConnectionError:  # offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and not in the cache
            if not hub_offline():
                raise
            raise not_cached(cfg.path) from None
        self._check_columns()
        self.spec = DataSpec(cfg.image_size, cfg.channels, self._num_classes())
        self._memory: InMemory | None = None

    # --- what the data offers ------------------------------------------------------------------------
    def _column_names(self) -> list[str]:
        features = self.dataset.features
        if features is not None:
            return list(features)
        return list(next(iter(self.dataset.take(1))).keys())  # formats without a schema: peek at one row

    def _check_columns(self) -> None:
        """Every column the family reads exists and has the right type in the schema (before any training)."""
        available = self._column_names()
        features = self.dataset.features or {}
        for key, column in self._column_map().items():
            if column not in available:
                raise DistganError(
                    f"data.{key}_column={column!r}: no such column in {self.cfg.path} "
                    f"(columns: {', '.join(available)}); set data.{key}_column"
                )
            feature = features.get(column)
            if feature is None:  # no schema: rows are checked as they are read
                continue
            if key == "label" and not _is_integer(feature):
                raise DistganError(
                    f"data.label_column={column!r}: column of {self.cfg.path} holds {_describe(feature)}, not integer "
                    "class ids; store labels as integers 0..N-1 (or a ClassLabel) or set data.label_column"
                )
            if key != "label" and not _is_image(feature):
                images = [name for name, f in features.items() if _is_image(f)]
                raise DistganError(
                    f"data.{key}_column={column!r}: column of {self.cfg.path} holds {_describe(feature)}, not images; "
                    f"set data.{key}_column to an image column (image columns: {', '.join(images) or 'none'})"
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
    def rows(self) -> Any:
        """The stream of the columns the family reads, images undecoded (`example` decodes them)."""
        columns = self._column_map()
        ds = self.dataset.select_columns(list(dict.fromkeys(columns.values())))
        for column in set(columns.values()):  # decoded by _Example (allowed formats, errors naming the file)
            if isinstance((ds.features or {}).get(column), datasets.Image):
                ds = ds.cast_column(column, datasets.Image(decode=False))
        return ds

    def example(self, seed: int = 0, rank: int = 0, uint8: bool = False) -> _Example:
        """The per-example transform `(row, index) -> {"image", ...}` of a row of `rows()`: images in [-1, 1],
        or uint8 (`to_float` scales them)."""
        return _Example(self._column_map(), self.cfg, seed, rank, self.source, uint8)

    def loader(
        self, batch_size: int, seed: int, rank: int, world_size: int, uint8: bool = False
    ) -> tuple[DataLoader, Any, _Example]:
        """This rank's DataLoader over its part of the stream, the stream (for `set_epoch`) and its transform."""
        ds = self.rows()
        if self.cfg.shuffle_buffer:
            ds = ds.shuffle(seed=seed, buffer_size=self.cfg.shuffle_buffer)  # same seed on all ranks: disjoint
        ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
        example = self.example(seed, rank, uint8)
        ds = ds.map(example, with_indices=True, remove_columns=list(set(self._column_map().values())))
        workers = min(self.cfg.num_workers, ds.num_shards)  # a worker without a shard would sit idle
        if workers:
            _kill_workers_at_exit()
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
        Workers send uint8 images; they are scaled to [-1, 1] here, a batch at a time. Each epoch has a
        loader of its own, started while the epoch before it is read (its workers start, open the files,
        fill the shuffle buffer and prefetch), so an epoch boundary does not stall training.
        A split that `cached()` accepts is decoded once instead and every epoch drawn from memory
        (`distgan.data.memory`: the same rank layout, position and exactness).
        """
        if self.cached():
            memory = self.in_memory(verbose=rank == 0)
            yield from memory.batches(batch_size, seed, rank, world_size, position, self.cfg.shuffle_buffer > 0)
            return
        epoch, skip = position
        current, upcoming = self._epoch_loader(batch_size, seed, rank, world_size, epoch), None
        try:
            while True:
                count = 0
                for index, batch in enumerate(self._unwrapped(current)):
                    if upcoming is None:  # after this epoch's first batch, so that the two do not compete for it
                        upcoming = self._epoch_loader(batch_size, seed, rank, world_size, epoch + 1)
                    count += 1
                    if index < skip:
                        continue
                    self._check_labels(batch)
                    yield (epoch, index), {k: to_float(v) if k in IMAGE_KEYS else v for k, v in batch.items()}
                if count == 0:
                    raise no_full_batch(self.cfg.path, rank, batch_size)
                epoch, skip, current, upcoming = epoch + 1, 0, upcoming, None
        finally:  # closed, or an error: end both loaders' workers now
            for it in (current, upcoming):
                stop_workers(it)

    # --- in memory (distgan.data.memory) -------------------------------------------------------------
    def decoded_mb(self) -> float | None:
        """MB the split takes decoded (uint8), at most; None when the number of rows is not known up front."""
        if self.source.builder == "parquet":
            rows = sum(pq.read_metadata(f).num_rows for f in self.source.parquet_files())  # all splits: a bound
        elif self.source.builder == "imagefolder":
            folder = Path(self.source.kwargs["data_dir"])
            rows = sum(1 for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            splits = self.dataset.info.splits or {}
            rows = splits[self.cfg.split].num_examples if self.cfg.split in splits else 0
            if not rows:
                return None
        images = sum(1 for key in self._column_map() if key in IMAGE_KEYS)
        return rows * images * self.cfg.channels * self.cfg.image_size**2 / 2**20

    def cached(self) -> bool:
        """Whether `batches` reads from memory: `data.cache_mb` > 0, a transform without randomness (the same
        images every epoch) and a split that fits."""
        random = ImageTransform(self.cfg.image_size, 1, self.cfg.load_size, self.cfg.random_flip).random
        if self.cfg.cache_mb == 0 or random:
            return False
        mb = self.decoded_mb()
        return mb is not None and mb <= self.cfg.cache_mb

    def in_memory(self, verbose: bool = False) -> InMemory:
        """The whole split decoded once, in file order, in this process (errors name the file or row)."""
        if self._memory is None:
            start = time.perf_counter()
            example, rows = self.example(uint8=True), []
            try:
                for index, row in enumerate(self.rows()):
                    rows.append(example(row, index))
            except pa.ArrowException as e:
                raise self._unreadable(_first_line(e)) from None
            if not rows:
                raise DistganError(f"data.path={self.cfg.path}: split {self.cfg.split!r} has no examples")
            tensors = {key: torch.stack([r[key] for r in rows]) for key in rows[0]}
            self._check_labels(tensors)
            self._memory = InMemory(tensors, self.cfg.path)
            if verbose:
                print(
                    f"data: {self._memory.size} examples decoded into memory once ({self._memory.nbytes / 2**20:.0f}"
                    f" MB, {time.perf_counter() - start:.1f} s; data.cache_mb=0 streams them every epoch instead)",
                    flush=True,
                )
        return self._memory

    def _epoch_loader(self, batch_size: int, seed: int, rank: int, world_size: int, epoch: int) -> Iterator[Batch]:
        """An iterator over one epoch's batches (uint8 images) from a loader of its own, whose workers start now."""
        loader, ds, example = self.loader(batch_size, seed, rank, world_size, uint8=True)
        ds.set_epoch(epoch)
        example.epoch = epoch  # DataLoader copies it into the workers when the iterator starts
        return iter(loader)

    def _unwrapped(self, it: Iterator[Batch]) -> Iterator[Batch]:
        """The loader's batches; a DistganError raised in a worker arrives with the worker's traceback as its
        message: re-raise it as the original one line. A parquet file that cannot be read is named."""
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except DistganError as e:
                if not str(e).startswith("Caught "):
                    raise
                raise type(e)(_original_message(e)) from None
            except pa.ArrowException as e:
                raise self._unreadable(_original_message(e)) from None
            yield batch

    def _unreadable(self, reason: str) -> DistganError:
        """The first local parquet file that cannot be read to the end (only on an error: this reads them all)."""
        for file in self.source.parquet_files():
            try:
                for _ in pq.ParquetFile(file).iter_batches():
                    pass
            except (pa.ArrowException, OSError) as e:
                return _damaged(self.cfg.path, file, e)
        return DistganError(f"data.path={self.cfg.path}: cannot read the data ({reason})")

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
    """SLURM signals every process of a job step (and Ctrl-C the whole process group): workers leave
    SIGTERM/SIGUSR1/SIGINT to the training process, which keeps reading batches until it has checkpointed.
    They exit when it shuts them down or dies, and are killed when it exits (`kill_workers`)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def kill_workers() -> None:
    """SIGKILL this process's DataLoader workers (its daemonic multiprocessing children), if any are alive.

    They ignore SIGTERM, and at interpreter exit multiprocessing sends daemonic children SIGTERM and then
    joins them without a limit (torch's own shutdown is skipped at exit): an error with workers alive would
    hang the process, its launcher and the job. Runs at exit (registered by `ImageStream.loader`).
    """
    children = [p for p in multiprocessing.active_children() if p.daemon]
    if children:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's SIGCHLD handler would raise for a killed worker
    for p in children:
        p.kill()
    for p in children:
        p.join(timeout=5)


def stop_workers(it: Iterator[Batch] | None) -> None:
    """End a DataLoader iterator's workers now (a no-op without workers or once they are shut down).

    Torch's own shutdown (when an iterator is dropped mid-epoch) asks each worker to stop and waits up to
    5 s for each one still busy with a batch, then sends SIGTERM, which ours ignore: an abandoned stream
    (a closed `batches`, an error, an evaluation's reference pass) would cost seconds per worker. So: stop
    the pin-memory thread first (it reads the workers' queue, which a killed worker can leave half written),
    forget the workers' pids (torch's SIGCHLD handler would report them as crashed), SIGKILL them (they only
    read), then close the queues without waiting on them. Torch's shutdown is not called after the kill: it
    sets the workers' shared stop event, whose lock a worker killed inside `is_set()` holds forever (a test
    process hung there). Relies on `_MultiProcessingDataLoaderIter`'s internals (torch pinned).
    """
    workers = getattr(it, "_workers", None)
    if not workers or it._shutdown:
        return
    if hasattr(it, "_pin_memory_thread"):
        it._pin_memory_thread_done_event.set()
        it._worker_result_queue.put((None, None))  # wakes it if it waits
        it._pin_memory_thread.join()
    if it._worker_pids_set:
        torch.utils.data._utils.signal_handling._remove_worker_pids(id(it))
        it._worker_pids_set = False
    for w in workers:
        w.kill()
    for w in workers:
        w.join(timeout=5)
    it._shutdown = True  # what torch's shutdown would still do is done here, or needs the dead workers' locks
    for q in (*it._index_queues, it._worker_result_queue):
        q.cancel_join_thread()  # their feeder threads may wait on a lock a killed worker held: never join them
        q.close()


_kill_registered = False


def _kill_workers_at_exit() -> None:
    global _kill_registered
    if not _kill_registered:
        atexit.register(kill_workers)  # after multiprocessing's hook, so it runs before it (last in, first out)
        _kill_registered = True


def _original_message(e: BaseException) -> str:
    """The message of an error as raised, also when a DataLoader worker's traceback was wrapped around it."""
    text = str(e).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        return text.splitlines()[-1].split(": ", 1)[-1]
    return _first_line(e)


def _damaged(path: str, file: Path, e: BaseException) -> DistganError:
    return DistganError(
        f"data.path={path}: parquet file {file} is damaged ({_first_line(e)}); re-create or re-download it"
    )


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _is_image(feature: Any) -> bool:
    """An image column: datasets' Image, or the {bytes, path} struct it is stored as."""
    return isinstance(feature, datasets.Image) or isinstance(feature, dict) and "bytes" in feature


def _is_integer(feature: Any) -> bool:
    return isinstance(feature, datasets.ClassLabel) or (
        isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))
    )


def _describe(feature: Any) -> str:
    return feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__


class _Example:
    """Picklable per-example transform (runs in DataLoader workers): decode, resize, crop, scale.

    Image-to-image rows give "source" and "image" (the target) from two columns, or from one image
    holding A|B side by side; `data.direction` says which is the source. Random crops and flips draw
    from a generator seeded by (seed, epoch, rank, worker, example index): reproducible after a resume,
    and independent of the training process's global RNG.
    """

    def __init__(
        self, columns: dict[str, str], cfg: DataConfig, seed: int, rank: int, source: Source, uint8: bool = False
    ) -> None:
        self.columns, self.channels, self.direction = columns, cfg.channels, cfg.direction
        self.path, self.source = cfg.path, source
        transform = ImageTransform(cfg.image_size, cfg.channels, cfg.load_size, cfg.random_flip)
        self.transform, self.random = transform.uint8 if uint8 else transform, transform.random
        self.seed, self.rank, self.epoch = seed, rank, 0

    def __call__(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        gen = None
        if self.random:
            info = torch.utils.data.get_worker_info()
            key = [self.seed, self.epoch, self.rank, info.id if info else 0, index]
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
        image = self._decode(row, "image", index)
        out: dict[str, Any] = {}
        if "source" in self.columns:
            if self.columns["source"] == self.columns["image"]:  # A|B side by side
                w, h = image.size[0] // 2, image.size[1]
                a, b = image.crop((0, 0, w, h)), image.crop((w, 0, 2 * w, h))
            else:
                a, b = self._decode(row, "source", index), image
            source, target = (a, b) if self.direction == "AtoB" else (b, a)
            out["source"], out["image"] = self.transform(source, target, generator=gen)
        else:
            (out["image"],) = self.transform(image, generator=gen)
        if "label" in self.columns:
            label = row[self.columns["label"]]
            if not isinstance(label, (int, np.integer)) or isinstance(label, bool):
                raise self._bad(row, "label", index, f"label {label!r} is not an integer class id")
            out["label"] = torch.tensor(int(label))
        return out

    def _decode(self, row: dict[str, Any], key: str, index: int) -> Image.Image:
        try:
            return to_pil(row[self.columns[key]], self.channels)
        except ValueError as e:
            raise self._bad(row, key, index, str(e)) from None

    def _bad(self, row: dict[str, Any], key: str, index: int, reason: str) -> DistganError:
        """A bad example is fatal (see README, Data): one line naming the file, or the parquet file and row."""
        value = row.get(self.columns["image"])
        where = f"example {index} of rank {self.rank}'s stream"
        if isinstance(value, dict) and value.get("bytes"):
            found = _find_row(self.source.parquet_files(), self.columns["image"], value["bytes"])
            where = f"parquet file {found[0]} row {found[1]}" if found else where
            where += f" (stored as {value['path']!r})" if value.get("path") else ""
        elif isinstance(value, dict) and value.get("path"):
            where = f"file {value['path']}"
        return DistganError(
            f"data.path={self.path}: {where}, column {self.columns[key]!r}: {reason}; fix or remove it "
            "(a bad example stops the run)"
        )


def _find_row(files: list[Path], column: str, data: bytes) -> tuple[Path, int] | None:
    """(file, row) of the first row whose image bytes are `data`: the stream does not say where a row came from,
    so a bad example is looked up by content (only when there is one: this reads the column once)."""
    for file in files:
        start = 0
        for batch in pq.ParquetFile(file).iter_batches(columns=[column]):
            values = batch.column(0)
            values = values.field("bytes") if hasattr(values.type, "get_field_index") else values
            hit = pc.index(pc.equal(values, data), True).as_py()
            if hit >= 0:
                return file, start + hit
            start += len(values)
    return None
