"""Evaluation during training: every `eval.every` steps (and at the end) score the generator, log the numbers,
and keep the best checkpoint by `checkpoint.best`.

Every process takes part in an evaluation (each generates and extracts features for its share of the
samples, see distgan.metrics.evaluator); only the main process writes `metrics.jsonl` and prints. The
numbers go to W&B as `eval/<key>` at the training step.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from distgan.config import Config
from distgan.errors import DistganError
from distgan.family import Family
from distgan.metrics.settings import LOWER_IS_BETTER, METRICS_KEYS
from distgan.train import checkpoint as ckpt


def check_eval_setup(cfg: Config) -> None:
    """Fail fast, before any process group: the feature extractor's weights (or classifier) are there."""
    if cfg.eval.every is None:
        return
    if cfg.eval.features == "inception" and os.environ.get("LOCAL_RANK", "0") != "0":
        return  # one process per machine checks (and downloads, where there is network): no parallel downloads
    from distgan.metrics.features import check_extractor

    try:
        check_extractor(cfg.eval.features, cfg.eval.inception_weights)
    except DistganError as e:
        raise DistganError(f"eval.features={cfg.eval.features} (eval.every={cfg.eval.every}): {e}") from None


@contextlib.contextmanager
def main_process_buffers(G: nn.Module, acc: Accelerator) -> Iterator[None]:
    """G holds the main process's buffers on every rank for the duration; then each rank's own again.

    DDP does not broadcast buffers (distgan.train.step), so BatchNorm running statistics differ between
    processes. Each rank generating its share with its own would score a mix of generators rather than the
    main process's, the one checkpointed and exported (measured on the demo: FID 0.5% off evaluate.py's
    number for the exported generator).
    """
    if acc.num_processes == 1:
        yield
        return
    own = [b.detach().clone() for b in G.buffers()]
    for b in G.buffers():
        torch.distributed.broadcast(b.data, src=0)
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in zip(G.buffers(), own, strict=True):
                b.copy_(saved)


class TrainingEval:
    """Scores the generator at the configured steps; remembers the best value of `checkpoint.best`."""

    def __init__(self, cfg: Config, family: Family, acc: Accelerator, run_dir: Path) -> None:
        from distgan.metrics.evaluator import Evaluator

        self.cfg, self.acc, self.run_dir = cfg, acc, run_dir
        settings = cfg.eval.settings(seed=cfg.train.seed)
        self.evaluator = Evaluator(settings, family, cfg.data, acc, log=self._say)
        self.best_key = cfg.checkpoint.best
        self.best = ckpt.read_best(run_dir / "checkpoints")  # survives resumes: a worse run never replaces it
        self.history: list[tuple[int, str, dict[str, float]]] = []  # (step, which G, values) of this start

    def _say(self, message: str) -> None:
        if self.acc.is_main_process:
            print(f"distgan: {message}", flush=True)

    def due(self, step: int, last: bool) -> bool:
        every = self.cfg.eval.every
        return every is not None and (step % every == 0 or last)

    def run(self, G: nn.Module, step: int, images_seen: int, which: str) -> dict[str, float]:
        """Evaluate `G` on every process; log to W&B, append to metrics.jsonl and print (main process)."""
        start = time.perf_counter()
        with main_process_buffers(G, self.acc):
            values = self.evaluator.evaluate(G)
        seconds = time.perf_counter() - start  # the evaluation's cost in training wall-clock (scripts/bench_eval.py)
        self.acc.log({f"eval/{k}": v for k, v in values.items()}, step=step)
        self.history.append((step, which, values))
        if self.acc.is_main_process:
            features = self.cfg.eval.features
            row: dict[str, Any] = {"step": step, "kimg": images_seen / 1000, "generator": which, "features": features}
            row |= values | {"images_per_sec": self.evaluator.throughput, "seconds": seconds}
            with (
                ckpt.disk_errors(self.run_dir / "metrics.jsonl", "the metrics log"),
                open(self.run_dir / "metrics.jsonl", "a") as f,
            ):
                f.write(json.dumps(row) + "\n")
            shown = "  ".join(f"{k}={v:.4g}" for k, v in values.items() if not k.startswith(("num_", "kid_sub")))
            note = "" if features == "inception" else " (classifier features: not comparable with Inception FID)"
            samples = int(values.get("num_fake", 0))
            self._say(f"eval at step {step} ({which} G, {samples} samples){note}: {shown}  ({seconds:.1f} s)")
        return values

    def summary(self) -> str | None:
        """One line for the end of the run: the first and last value of the main metric (`checkpoint.best`, else
        the first that eval.metrics computes), saying which features it comes from."""
        keys = [k for m in self.cfg.eval.metrics for k in METRICS_KEYS[m]]
        key = self.best_key or (keys[0] if keys else None)
        if key is None or not self.history:
            return None
        (s0, which, first), (s1, _, last) = self.history[0], self.history[-1]
        line = f"eval/{key} of the {which} G: {first[key]:.4g} at step {s0} -> {last[key]:.4g} at step {s1}"
        features = self.cfg.eval.features
        if features == "inception":
            return f"{line} (Inception features)"
        return (
            f"{line} (features of the classifier {features.split(':', 1)[1]}: comparable only with numbers from "
            "the same classifier, never with papers' Inception FID)"
        )

    def improved(self, values: dict[str, float]) -> bool:
        """Whether `values` beats the best so far on `checkpoint.best` (lower or higher better as the metric says)."""
        if self.best_key is None or self.best_key not in values:
            return False
        value = values[self.best_key]
        if self.best is None:
            return True
        return value < self.best["value"] if LOWER_IS_BETTER[self.best_key] else value > self.best["value"]

    def mark_best(self, folder: Path, values: dict[str, float], step: int) -> None:
        """Record `folder` as the best checkpoint (main process; rotation never deletes it)."""
        self.best = {"checkpoint": folder.name, "metric": self.best_key, "value": values[self.best_key], "step": step}
        if self.acc.is_main_process:
            ckpt.write_best(folder.parent, self.best)
            self._say(f"best {self.best_key}={self.best['value']:.4g} at step {step}: {folder} (kept by rotation)")
