"""Evaluation: FID, KID, IS, precision/recall (torch-fidelity's numbers), class accuracy and L1, distributed.

from distgan.metrics import EvalSettings, Evaluator
evaluator = Evaluator(EvalSettings(metrics=("fid", "kid")), family, cfg.data, accelerator)
values = evaluator.evaluate(G)   # on every process; the same dict everywhere
"""

from distgan.metrics.evaluator import LOWER_IS_BETTER, METRICS, EvalSettings, Evaluator
from distgan.metrics.features import check_extractor, load_extractor, to_uint8

__all__ = ["LOWER_IS_BETTER", "METRICS", "EvalSettings", "Evaluator", "check_extractor", "load_extractor", "to_uint8"]
