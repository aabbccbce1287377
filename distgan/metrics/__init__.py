"""Evaluation: FID, KID, IS, precision/recall (torch-fidelity's numbers), class accuracy and L1, distributed.

    from distgan.metrics import EvalSettings
    from distgan.metrics.evaluator import Evaluator
    evaluator = Evaluator(EvalSettings(metrics=("fid", "kid")), family, cfg.data, accelerator)
    values = evaluator.evaluate(G)   # on every process; the same dict everywhere

This package's __init__ stays light (no torch): entry points validate settings before heavy imports.
"""

from distgan.metrics.settings import LOWER_IS_BETTER, METRICS, METRICS_KEYS, EvalSettings

__all__ = ["LOWER_IS_BETTER", "METRICS", "METRICS_KEYS", "EvalSettings"]
