#!/usr/bin/env bash
# The prepared GPU check (docs/benchmarks.md): on one CUDA GPU, within 9 minutes,
#   1. the CUDA-only tests (pytest -m cuda: every precision with channels_last, compiled graphs, a round trip);
#   2. scripts/bench.py at the seed size: fp32/bf16/fp16, eager and the fast path, distgan vs a plain loop;
#   3. a short real training run: demo_digits' DCGAN on the real digits with bf16, train.sync_bn and compile;
#   4. stylegan2: scripts/bench.py on the cifar10 networks (distgan vs a plain loop, fp32), and a short
#      stylegan2_mnist run on the digits with its two highest resolutions in fp16 (num_fp16_res, conv_clamp);
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

echo "== 1/4 CUDA tests"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/gpu 2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}

echo "== 2/4 bench (64x64, ngf = ndf = 64, batch 128)"
timeout 240 "$PY" scripts/bench.py --rounds 5 2>&1 | tee "$out/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "== 3/4 training: demo_digits on the GPU, bf16, sync_bn, compile"
"$PY" scripts/prepare_digits.py --out "$out/digits" >/dev/null
rm -rf "$out/run"
timeout 120 "$PY" launch/train.py --config demo_digits --output-dir "$out/run" data.path="$out/digits" \
  train.mixed_precision=bf16 train.sync_bn=true train.compile=true train.max_steps=600 log.every=100 \
  log.progress=false log.wandb=off eval.every=null checkpoint.best=null 2>&1 | tee "$out/train.log"
train_rc=${PIPESTATUS[0]}

echo "== 4/4 stylegan2: bench on the cifar10 networks (batch 64); stylegan2_mnist with fp16 at 16 and 32"
"$PY" -c "
import json
from distgan.config import load_config
from distgan.family import DataSpec
from distgan.models.stylegan2 import StyleGAN2
cfg = load_config('stylegan2_cifar10', ['data.path=x'])
G, D = StyleGAN2(cfg.model, DataSpec(cfg.data.image_size, cfg.data.channels)).kwargs()
print(json.dumps({'G_kwargs': G, 'D_kwargs': D}))" > "$out/stylegan2_cifar10.json"
timeout 150 "$PY" scripts/bench.py --family stylegan2 --config-json "$out/stylegan2_cifar10.json" --batch 64 \
  --rounds 3 2>&1 | tee "$out/bench_stylegan2.log"
sg2_bench_rc=${PIPESTATUS[0]}
rm -rf "$out/run_sg2"
timeout 100 "$PY" launch/train.py --config stylegan2_mnist --output-dir "$out/run_sg2" data.path="$out/digits" \
  model.num_fp16_res=2 model.conv_clamp=256 train.max_steps=200 log.every=50 log.progress=false log.wandb=off \
  checkpoint.every=100 2>&1 | tee "$out/train_sg2.log"
sg2_train_rc=${PIPESTATUS[0]}

echo
echo "| check | result |"
echo "|---|---|"
echo "| GPU | $(head -1 "$out/gpu.txt") |"
echo "| CUDA tests (exit $tests_rc) | $(grep -E '[0-9]+ (passed|failed)' "$out/tests.log" | tail -1) |"
echo "| training (exit $train_rc) | $(grep -E 'first step|done\.' "$out/train.log" | tr '\n' ' ' | cut -c1-200) |"
echo "| bench (exit $bench_rc) | $(grep -E '^fast path / plain fp32 eager' "$out/bench.log" || echo 'no headline') |"
echo "| stylegan2 bench (exit $sg2_bench_rc) | $(grep -E '^\| cuda' "$out/bench_stylegan2.log" | tr '\n' ' ') |"
echo "| stylegan2 fp16 training (exit $sg2_train_rc) | $(grep -E 'first step|done\.' "$out/train_sg2.log" | tr '\n' ' ' | cut -c1-200) |"
echo
grep -E '^\|' "$out/bench.log"
echo "outputs in $out"
