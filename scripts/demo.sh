#!/usr/bin/env bash
# The offline demo: DCGAN on real handwritten digits (configs/demo_digits.yaml) with every GPU, or with
# 2-process DDP on the CPU when there is none; the EMA generator is scored every 250 steps with a classifier-FID.
# Extra arguments are passed on (e.g. train.max_steps=300).
set -euo pipefail
cd "$(dirname "$0")/.."
for need in data/digits data/digits-classifier/config.json; do
  [ -e "$need" ] || { echo "error: $need is missing: run 'bash scripts/setup.sh' first" >&2; exit 2; }
done
gpus=$(.venv/bin/python -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -gt 1 ]; then dist=(--multi_gpu --num_processes "$gpus")
elif [ "$gpus" -eq 1 ]; then dist=(--num_processes 1)
else dist=(--multi_gpu --num_processes 2); fi  # distgan turns this into gloo DDP on the CPU
out="runs/demo-$(date +%Y%m%d-%H%M%S)"
.venv/bin/accelerate launch "${dist[@]}" --num_machines 1 --mixed_precision no --dynamo_backend no \
  launch/train.py --config demo_digits --output-dir "$out" "$@"
echo "demo finished: sample grids in $out/samples, checkpoints in $out/checkpoints, generator in $out/generator,"
echo "W&B run in $out/wandb, every evaluation in $out/metrics.jsonl (the first and last classifier-FID: above);"
echo "draw more: .venv/bin/python launch/sample.py --generator $out/generator --out $out/more.png"
