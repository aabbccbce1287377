"""Distributed evaluation: every process generates and scores its share; every process returns the same numbers.

Samples are keyed by global index and grouped in chunks of `batch_size` consecutive indices; chunk c
belongs to rank c % world_size. A sample's inputs depend only on (seed, index) (`Family.eval_inputs`)
and a chunk is the same batch on any number of processes, so 1, 2 or N processes score the same images
in the same batches. Real images are numbered in the split's stream order and chunked the same way, so
each is read and decoded by one rank only. After the pass one all-reduce carries the float64 sums (FID
statistics, accuracy, L1) and one gather the features that KID, PR, IS and per-class FID need, in global
order; every rank then computes the same metrics, and rank 0's values are broadcast.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from distgan.config import DataConfig
from distgan.errors import DistganError
from distgan.family import Family
from distgan.metrics import scores
from distgan.metrics.cache import ReferenceCache, reference_key
from distgan.metrics.features import load_extractor, to_uint8
from distgan.metrics.settings import EvalSettings

FOLDER_SUFFIXES = ("png", "jpg", "jpeg")  # torch-fidelity's samples_find_ext
_DTYPES = {"float64": torch.float64, "float32": torch.float32, "int64": torch.int64, "torch.float64": torch.float64}
_DTYPES |= {"torch.float32": torch.float32, "torch.int64": torch.int64}


# --- one set of images -> what the metrics need ---------------------------------------------------------
class Collector:
    """Accumulates one set's features on this rank; `finish` reduces/gathers them once across ranks."""

    def __init__(self, metrics: tuple[str, ...], ext: nn.Module, device: torch.device) -> None:
        self.need_stats = "fid" in metrics
        self.need_pool = bool({"kid", "pr", "fid_per_class"} & set(metrics))
        self.need_logits = "is" in metrics
        self.need_labels = "fid_per_class" in metrics
        self.dim, self.classes = ext.dim, ext.num_classes
        self.width = self.dim * self.need_pool + self.classes * self.need_logits + self.need_labels
        self.device = device
        self.total = torch.zeros(self.dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=device) if self.need_stats else None
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # n, correct, l1 sum, l1 count
        self.parts: list[Tensor] = []  # per batch: [pool | logits | label] rows, float32

    def add(self, feats: dict[str, Tensor], labels: Tensor | None = None, l1: Tensor | None = None) -> None:
        """One batch: features (uint8 images through the extractor), its class labels, per-image L1."""
        pool = feats["pool"]
        self.sums[0] += pool.shape[0]
        if self.need_stats:
            x = pool.double()
            self.total += x.sum(0)
            self.outer += x.T @ x
        if labels is not None:
            self.sums[1] += (feats["logits"].argmax(1) == labels).sum()
        if l1 is not None:
            self.sums[2] += l1.double().sum()
            self.sums[3] += l1.numel()
        row = ([pool] if self.need_pool else []) + ([feats["logits"]] if self.need_logits else [])
        if self.need_labels:
            row.append(labels[:, None].float())
        if row:
            self.parts.append(torch.cat(row, 1).float())

    def finish(self, comm: Comm, chunk: int) -> dict[str, Any]:
        """Reduce sums and gather rows (global index order) across ranks; the same dict on every rank."""
        packed = torch.cat([self.sums, self.total] + ([self.outer.flatten()] if self.need_stats else []))
        packed = comm.sum(packed)
        n, dim = int(packed[0]), self.dim
        out: dict[str, Any] = {"n": n, "correct": float(packed[1]), "l1_sum": float(packed[2])}
        out["l1_count"] = float(packed[3])
        if self.need_stats and n > 1:
            out["mu"], out["sigma"] = scores.stats_from_sums(packed[4 : 4 + dim], packed[4 + dim :].view(dim, dim), n)
        if self.width:
            local = torch.cat(self.parts) if self.parts else torch.zeros(0, self.width, device=self.device)
            rows = comm.gather_chunks(local, chunk, n)
            col = 0
            for name, width, needed in (
                ("pool", dim, self.need_pool),
                ("logits", self.classes, self.need_logits),
                ("labels", 1, self.need_labels),
            ):
                if needed:
                    out[name] = rows[:, col : col + width]
                    col += width
            if "labels" in out:
                out["labels"] = out["labels"][:, 0].long()
        return out


# --- processes -------------------------------------------------------------------------------------------
class Comm:
    """The few collectives evaluation needs, over an Accelerator (or none: one process)."""

    def __init__(self, accelerator: Any = None) -> None:
        self.acc = accelerator
        self.rank = accelerator.process_index if accelerator else 0
        self.world = accelerator.num_processes if accelerator else 1
        self.device = accelerator.device if accelerator else torch.device("cpu")

    def sum(self, t: Tensor) -> Tensor:
        return self.acc.reduce(t, reduction="sum") if self.world > 1 else t

    def broadcast(self, t: Tensor) -> Tensor:
        if self.world == 1:
            return t
        from accelerate.utils import broadcast

        return broadcast(t.contiguous(), from_process=0)

    def gather_chunks(self, local: Tensor, chunk: int, n: int) -> Tensor:
        """Rows of chunks r, r + W, ... from every rank r -> (n, width) in global index order."""
        if self.world == 1:
            return local
        counts = self.acc.gather(torch.tensor([local.shape[0]], device=local.device)).tolist()
        pad = max(counts)
        padded = torch.zeros(pad, local.shape[1], dtype=local.dtype, device=local.device)
        padded[: local.shape[0]] = local
        everything = self.acc.gather(padded)  # (W * pad, width)
        order = [
            rank * pad + (c // self.world) * chunk + j
            for c, start in enumerate(range(0, n, chunk))
            for rank in [c % self.world]
            for j in range(min(chunk, n - start))
        ]
        return everything[torch.tensor(order, device=everything.device)]

    def owned_chunks(self, n: int, chunk: int) -> Iterator[Tensor]:
        """Global indices of this rank's chunks of [0, n)."""
        for c, start in enumerate(range(0, n, chunk)):
            if c % self.world == self.rank:
                yield torch.arange(start, min(start + chunk, n))


# --- real data -----------------------------------------------------------------------------------------
def iter_real(
    data: DataConfig, columns: tuple[str, ...], limit: int | None, chunk: int, comm: Comm
) -> Iterator[dict[str, Tensor]]:
    """This rank's batches of the split in stream order (rows i with (i // chunk) % W == rank), center-cropped.

    Images are decoded only by the rank that owns them (the image columns are read undecoded first).
    """
    from distgan.data import ImageStream

    cfg = dataclasses.replace(data, shuffle_buffer=0, load_size=None, random_flip=False)
    stream = ImageStream(cfg, columns)
    ds = stream.rows()
    if limit is not None:
        ds = ds.take(limit)
    world, rank = comm.world, comm.rank
    ds = ds.filter(lambda _, i: (i // chunk) % world == rank, with_indices=True)
    example = stream.example()
    rows: list[dict[str, Any]] = []
    for i, row in enumerate(ds):
        rows.append(example(row, i))
        if len(rows) == chunk:
            yield {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
            rows = []
    if rows:
        yield {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def list_images(folder: str | Path) -> list[str]:
    """Image files of a folder as torch-fidelity finds them: not recursive, png/jpg/jpeg, sorted real paths."""
    path = Path(folder)
    if not path.is_dir():
        raise DistganError(f"{folder}: no such folder of images")
    files = sorted(
        os.path.realpath(p) for p in path.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in FOLDER_SUFFIXES
    )
    if not files:
        raise DistganError(f"{folder}: no .png/.jpg/.jpeg images in it")
    return files


# --- the evaluator -------------------------------------------------------------------------------------
class Evaluator:
    """Scores generators against one dataset split; the reference side is computed once (and cached on disk).

    `evaluate(G)` must be called on every process; it returns the same dict on all of them.
    """

    def __init__(
        self,
        settings: EvalSettings,
        family: Family | None,
        data: DataConfig | None,
        accelerator: Any = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        settings.validate()
        self.settings, self.family, self.data = settings, family, data
        self.comm = Comm(accelerator)
        self.log = log or (lambda _msg: None)
        self.extractor: nn.Module | None = None
        self.reference: dict[str, Any] | None = None
        self.throughput: float | None = None  # images/s of the last feature extraction (all processes)
        if family is not None:
            self._check_family(family)
        if data is not None and settings.split:
            self.data = dataclasses.replace(data, split=settings.split)

    def _check_family(self, family: Family) -> None:
        m = self.settings.metrics
        if ("acc" in m or "fid_per_class" in m) and "label" not in family.columns:
            raise DistganError(f"--metrics acc/fid_per_class: the '{family.name}' family is not class-conditional")
        if "l1" in m and "source" not in family.columns:
            raise DistganError(f"--metrics l1: the '{family.name}' family is not image-to-image")

    def get_extractor(self) -> nn.Module:
        if self.extractor is None:
            self.extractor = load_extractor(self.settings.features, self.settings.inception_weights)
            self.extractor.to(self.comm.device).eval()
        return self.extractor

    # --- reference (real) side ------------------------------------------------------------------------
    def _ref_columns(self) -> tuple[str, ...]:
        if self.family is not None and "source" in self.family.columns:
            return ("image", "source")
        return ("image", "label") if "fid_per_class" in self.settings.metrics else ("image",)

    def get_reference(self) -> dict[str, Any]:
        """Real-data statistics/features: from memory, else the disk cache (rank 0 reads, broadcasts), else computed."""
        if self.reference is not None:
            return self.reference
        ext, s = self.get_extractor(), self.settings
        if not _real_metrics(s.metrics):  # IS and accuracy need no real images
            self.reference = {"n": 0}
            return self.reference
        need = _needed(s.metrics)
        key = reference_key(self.data, self._ref_columns(), ext, s.num_real)
        cache = ReferenceCache(s.cache_dir)
        found = cache.load(key, need) if self.comm.rank == 0 else None
        hit = self.comm.broadcast(torch.tensor([1 if found is not None else 0], device=self.comm.device))
        if int(hit.item()):
            self.reference = self._broadcast_reference(found)
            self.log(f"eval: reference statistics from cache ({self.reference['n']} real images)")
            return self.reference
        start = time.time()
        collector = Collector(_real_metrics(s.metrics), ext, self.comm.device)
        for batch in iter_real(self.data, self._ref_columns(), s.num_real, s.batch_size, self.comm):
            images = batch["image"].to(self.comm.device)
            labels = batch["label"].to(self.comm.device) if "label" in batch else None
            collector.add(ext(to_uint8(images)), labels=labels)
        result = collector.finish(self.comm, s.batch_size)
        if result["n"] < 2:
            raise DistganError(f"data.path={self.data.path}: fewer than 2 real images in split {self.data.split!r}")
        self.reference = _reference_from(result, ext.dim, "fid_per_class" in s.metrics)
        self.log(f"eval: reference statistics of {result['n']} real images in {time.time() - start:.1f} s")
        if self.comm.rank == 0:
            cache.save(key, self.reference)
        return self.reference

    def _broadcast_reference(self, found: dict[str, Any] | None) -> dict[str, Any]:
        """Rank 0's cached reference to every rank (no shared file system needed)."""
        if self.comm.world == 1:
            return found
        from accelerate.utils import broadcast_object_list

        meta = [None]
        if found is not None:
            meta = [{k: (tuple(v.shape), str(v.dtype)) for k, v in found.items() if k != "n"} | {"n": found["n"]}]
        meta = broadcast_object_list(meta, from_process=0)[0]
        out: dict[str, Any] = {"n": meta.pop("n")}
        for k, (shape, dtype) in sorted(meta.items()):
            local = torch.as_tensor(found[k]) if found is not None else torch.zeros(shape, dtype=_DTYPES[dtype])
            t = self.comm.broadcast(local.to(self.comm.device)).cpu()
            out[k] = t.numpy() if k in ("mu", "sigma") else t
        return out

    # --- generated side ---------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, G: nn.Module) -> dict[str, float]:
        """Generate and score: {"fid": ..., "kid_mean": ..., ...}; identical on every process."""
        if self.family is None or self.data is None:
            raise DistganError("Evaluator.evaluate needs a family and data")
        s, ext, comm = self.settings, self.get_extractor(), self.comm
        if comm.acc is not None:
            G = comm.acc.unwrap_model(G)
        was_training = G.training
        G.eval()
        device = next(G.parameters()).device
        translate = "source" in self.family.columns
        ref = None if translate else self.get_reference()
        start = time.time()
        fake = Collector(s.metrics, ext, comm.device)
        real = Collector(_real_metrics(s.metrics), ext, comm.device) if translate else None
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                if translate:
                    batches = iter_real(self.data, self._ref_columns(), s.num_samples, s.batch_size, comm)
                    chunks = ((None, b) for b in batches)
                else:
                    chunks = ((idx, None) for idx in comm.owned_chunks(s.num_samples, s.batch_size))
                for c, (idx, batch) in enumerate(chunks):
                    chunk_seed = s.seed * 1_000_003 + c * comm.world + comm.rank  # global chunk id: dropout noise
                    torch.default_generator.manual_seed(chunk_seed)
                    if device.type == "cuda":
                        torch.cuda.manual_seed(chunk_seed)
                    if idx is None:
                        idx = torch.arange(len(batch["image"]))
                    inputs = {k: v.to(device) for k, v in self.family.eval_inputs(idx, s.seed, batch).items()}
                    images = self.family.generate(G, inputs).float()
                    labels = inputs.get("label") if "acc" in s.metrics or "fid_per_class" in s.metrics else None
                    l1 = (images - inputs["target"].float()).abs().mean(dim=(1, 2, 3)) if "target" in inputs else None
                    feats = ext(to_uint8(images).to(comm.device))
                    fake.add(feats, labels=None if labels is None else labels.to(comm.device), l1=l1)
                    if real is not None:
                        real.add(ext(to_uint8(inputs["target"]).to(comm.device)))
        finally:
            G.train(was_training)
        fake_result = fake.finish(comm, s.batch_size)
        if real is not None:
            ref = _reference_from(real.finish(comm, s.batch_size), ext.dim, False)
        self.throughput = fake_result["n"] * (2 if translate else 1) / max(time.time() - start, 1e-9)
        return self._finish(compute_metrics(fake_result, ref, s))

    def score_folders(self, fake_dir: str | Path, real_dir: str | Path) -> dict[str, float]:
        """Two folders of images (as torch-fidelity reads them: RGB uint8 at their own size)."""
        s, ext, comm = self.settings, self.get_extractor(), self.comm
        fake_files, real_files = list_images(fake_dir), list_images(real_dir)
        start = time.time()
        results = []
        for files, metrics in ((fake_files, s.metrics), (real_files, _real_metrics(s.metrics))):
            collector = Collector(metrics, ext, comm.device)
            for idx in comm.owned_chunks(len(files), s.batch_size):
                for images in _load_folder_batch([files[i] for i in idx]):
                    collector.add(ext(images.to(comm.device)))
            results.append(collector.finish(comm, s.batch_size))
        self.throughput = (len(fake_files) + len(real_files)) / max(time.time() - start, 1e-9)
        return self._finish(compute_metrics(results[0], _reference_from(results[1], ext.dim, False), s))

    def _finish(self, values: dict[str, float]) -> dict[str, float]:
        """Rank 0's numbers on every rank (they agree already; this makes it exact)."""
        names = sorted(values)
        t = torch.tensor([values[k] for k in names], dtype=torch.float64, device=self.comm.device)
        return dict(zip(names, self.comm.broadcast(t).cpu().tolist()))


def _load_folder_batch(files: list[str]) -> Iterator[Tensor]:
    """uint8 (B, 3, H, W) batches of consecutive same-size images (PIL convert("RGB"), as torch-fidelity)."""
    from distgan.data.transforms import pil_to_uint8  # lazily, as iter_real: folders need no `datasets`

    images = [pil_to_uint8(Image.open(f).convert("RGB")) for f in files]
    start = 0
    for i in range(1, len(images) + 1):
        if i == len(images) or images[i].shape != images[start].shape:
            yield torch.stack(images[start:i])
            start = i


def _needed(metrics: tuple[str, ...]) -> set[str]:
    need = {"mu", "sigma"} if "fid" in metrics else set()
    if {"kid", "pr", "fid_per_class"} & set(metrics):
        need.add("features")
    if "fid_per_class" in metrics:
        need.add("labels")
    return need


def _real_metrics(metrics: tuple[str, ...]) -> tuple[str, ...]:
    """What the real side needs to store: no IS, no accuracy."""
    return tuple(m for m in metrics if m in ("fid", "kid", "pr", "fid_per_class"))


def _reference_from(result: dict[str, Any], dim: int, labelled: bool) -> dict[str, Any]:
    ref: dict[str, Any] = {"n": result["n"]}
    if "mu" in result:
        ref["mu"], ref["sigma"] = result["mu"], result["sigma"]
    if "pool" in result:
        ref["features"] = result["pool"].float()
    if labelled and "labels" in result:
        ref["labels"] = result["labels"]
    return ref


def compute_metrics(fake: dict[str, Any], ref: dict[str, Any], s: EvalSettings) -> dict[str, float]:
    """Metrics from a generated set's reduced/gathered features and the reference; the same on every rank."""
    out: dict[str, float] = {}
    if "fid" in s.metrics:
        if "sigma_sqrt" not in ref:  # the reference's root (the costly eigh) is kept with it for later evaluations
            ref["sigma_sqrt"] = scores.sqrt_psd(ref["sigma"])
        out["fid"] = scores.fid_from_stats(fake["mu"], fake["sigma"], ref["mu"], ref["sigma"], ref["sigma_sqrt"])
    if "kid" in s.metrics:
        out["kid_mean"], out["kid_std"], m = scores.kid(fake["pool"], ref["features"], s.kid_subsets, s.kid_subset_size)
        out["kid_subset_size"] = float(m)
        out["kid_subsets"] = float(s.kid_subsets)
    if "pr" in s.metrics:
        real = ref["features"].to(fake["pool"].device)
        out["precision"], out["recall"] = scores.precision_recall(fake["pool"], real, s.pr_neighborhood)
    if "is" in s.metrics:
        out["is_mean"], out["is_std"] = scores.inception_score(fake["logits"].cpu(), s.isc_splits)
    if "acc" in s.metrics:
        out["accuracy"] = fake["correct"] / fake["n"]
    if "l1" in s.metrics:
        out["l1"] = fake["l1_sum"] / max(fake["l1_count"], 1)
    if "fid_per_class" in s.metrics:
        labels, real_labels = fake["labels"].cpu(), ref["labels"].long().cpu()
        pool, real = fake["pool"].double().cpu().numpy(), ref["features"].double().cpu().numpy()
        for c in sorted(set(labels.tolist()) & set(real_labels.tolist())):
            a, b = pool[(labels == c).numpy()], real[(real_labels == c).numpy()]
            if len(a) > 1 and len(b) > 1:
                out[f"fid_class_{c}"] = scores.fid_from_stats(
                    a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
                )
    out["num_fake"], out["num_real"] = float(fake["n"]), float(ref["n"])
    return out
