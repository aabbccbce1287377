#!/usr/bin/env bash
# The prepared GPU check (docs/benchmarks.md): on one CUDA GPU, within 8 minutes,
#   1. the CUDA-only tests (pytest -m cuda: every precision with channels_last, compiled graphs, a round trip);
#   2. scripts/bench.py at the seed size: fp32/bf16/fp16, eager and the fast path, distgan vs a plain loop;
#   3. a short real training run: demo_digits' DCGAN on the real digits with bf16, train.sync_bn and compile;
# then one summary table. Outputs (logs, the run's samples) go to $GPU_CHECK_OUT, else $OUT (the device
# tool's folder), else runs/gpu_check/<time>. On a machine without a CUDA GPU it says so and exits 0.
#
# Packages: it uses .venv/bin/python, else python3. A lent device image lacks `datasets` and `wandb`: put their
# wheels (and their missing requirements) in .whl/ (see the device tool's README) and they are installed first.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
out="${GPU_CHECK_OUT:-${OUT:-runs/gpu_check/$(date +%Y%m%d-%H%M%S)}}"
mkdir -p "$out"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU visible to $PY (torch.cuda.is_available() is false): nothing to check here"
  exit 0
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu_check_site .whl/*.whl \
    && export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
missing=$("$PY" -c "
import importlib.util as u
print(' '.join(m for m in ('accelerate', 'datasets', 'wandb', 'safetensors', 'sklearn', 'yaml') if not u.find_spec(m)))")
if [ -n "$missing" ]; then
  echo "gpu_check: missing Python packages: $missing (carry their wheels in .whl/); stopping"
  exit 1
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
"$PY" -c "import torch, accelerate; print('torch', torch.__version__, 'accelerate', accelerate.__version__)" \
  | tee -a "$out/gpu.txt"

echo "== 1/3 CUDA tests"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/gpu 2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}

echo "== 2/3 bench (64x64, ngf = ndf = 64, batch 128)"
timeout 240 "$PY" scripts/bench.py --rounds 5 2>&1 | tee "$out/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "== 3/3 training: demo_digits on the GPU, bf16, sync_bn, compile"
"$PY" scripts/prepare_digits.py --out "$out/digits" >/dev/null
rm -rf "$out/run"
timeout 120 "$PY" launch/train.py --config demo_digits --output-dir "$out/run" data.path="$out/digits" \
  train.mixed_precision=bf16 train.sync_bn=true train.compile=true train.max_steps=600 log.every=100 \
  log.progress=false log.wandb=off eval.every=null checkpoint.best=null 2>&1 | tee "$out/train.log"
train_rc=${PIPESTATUS[0]}

echo
echo "| check | result |"
echo "|---|---|"
echo "| GPU | $(head -1 "$out/gpu.txt") |"
echo "| CUDA tests (exit $tests_rc) | $(grep -E '[0-9]+ (passed|failed)' "$out/tests.log" | tail -1) |"
echo "| training (exit $train_rc) | $(grep -E 'first step|done\.' "$out/train.log" | tr '\n' ' ' | cut -c1-200) |"
echo "| bench (exit $bench_rc) | $(grep -E '^fast path / plain fp32 eager' "$out/bench.log" || echo 'no headline') |"
echo
grep -E '^\|' "$out/bench.log"
echo "outputs in $out"
