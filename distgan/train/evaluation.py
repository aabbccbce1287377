"""Evaluation during training: every `eval.every` steps (and at the end) score the generator, log the numbers,
and keep the best checkpoint by `checkpoint.best`.

Every process takes part in an evaluation (each generates and extracts features for its share of the
samples, see distgan.metrics.evaluator); only the main process writes `metrics.jsonl` and prints. The
numbers go to W&B as `eval/<key>` at the training step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from torch import nn

from distgan.config import Config
from distgan.errors import DistganError
from distgan.family import Family
from distgan.metrics.settings import LOWER_IS_BETTER
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


class TrainingEval:
    """Scores the generator at the configured steps; remembers the best value of `checkpoint.best`."""

    def __init__(self, cfg: Config, family: Family, acc: Accelerator, run_dir: Path) -> None:
        from distgan.metrics.evaluator import Evaluator

        self.cfg, self.acc, self.run_dir = cfg, acc, run_dir
        settings = cfg.eval.settings(seed=cfg.train.seed)
        self.evaluator = Evaluator(settings, family, cfg.data, acc, log=self._say)
        self.best_key = cfg.checkpoint.best
        self.best = ckpt.read_best(run_dir / "checkpoints")  # survives resumes: a worse run never replaces it

    def _say(self, message: str) -> None:
        if self.acc.is_main_process:
            print(f"distgan: {message}", flush=True)

    def due(self, step: int, last: bool) -> bool:
        every = self.cfg.eval.every
        return every is not None and (step % every == 0 or last)

    def run(self, G: nn.Module, step: int, images_seen: int, which: str) -> dict[str, float]:
        """Evaluate `G` on every process; log to W&B, append to metrics.jsonl and print (main process)."""
        values = self.evaluator.evaluate(G)
        self.acc.log({f"eval/{k}": v for k, v in values.items()}, step=step)
        if self.acc.is_main_process:
            features = self.cfg.eval.features
            row: dict[str, Any] = {"step": step, "kimg": images_seen / 1000, "generator": which, "features": features}
            row |= values | {"images_per_sec": self.evaluator.throughput}
            with (
                ckpt.disk_errors(self.run_dir / "metrics.jsonl", "the metrics log"),
                open(self.run_dir / "metrics.jsonl", "a") as f,
            ):
                f.write(json.dumps(row) + "\n")
            shown = "  ".join(f"{k}={v:.4g}" for k, v in values.items() if not k.startswith(("num_", "kid_sub")))
            note = "" if features == "inception" else " (classifier features: not comparable with Inception FID)"
            self._say(f"eval at step {step} ({which} G, {int(values.get('num_fake', 0))} samples){note}: {shown}")
        return values

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
