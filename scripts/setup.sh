#!/usr/bin/env bash
# Set up a fresh checkout: .venv with the pinned stack (torch 2.14.1, accelerate 1.15, datasets 5.2,
# wandb 0.31) and the offline demo data (scikit-learn's real digits as parquet). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
[ -f data/digits/train-00000-of-00004.parquet ] || .venv/bin/python scripts/prepare_digits.py
