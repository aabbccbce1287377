#!/usr/bin/env bash
# Set up a fresh checkout: .venv with the pinned stack (torch 2.14.1, accelerate 1.15, datasets 5.2,
# wandb 0.31), the offline demo data (scikit-learn's real digits as parquet) and the classifier the demo scores
# its generator with (data/digits-classifier). Safe to run again: each step is skipped when its output is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
[ -f data/digits/train-00000-of-00004.parquet ] || .venv/bin/python scripts/prepare_digits.py
# The demo's evaluation features: a small digits classifier (~20 s). One thread: a CNN this small gains nothing
# from more, and on a busy CPU OpenMP's spinning threads made it 10x slower (measured).
[ -f data/digits-classifier/config.json ] || OMP_NUM_THREADS=1 .venv/bin/python scripts/train_classifier.py \
  --data data/digits --out data/digits-classifier --image-size 32 --channels 1 --steps 300 --batch 32
