"""What evaluation costs: its share of training wall-clock, feature extraction speed and FID's matrix root.

    python scripts/bench_eval.py                                   # the demo: 1500 steps, with and without eval
    python scripts/bench_eval.py --steps 500 eval.every=100 eval.num_samples=5000     # other eval settings
    python scripts/bench_eval.py --config gan_mnist --nproc 1 eval.every=200 eval.features=classifier:DIR

1. Trains `--config` for `--steps` steps twice through the real `accelerate launch` (as scripts/demo.sh does):
   once with `eval.every=null` and once with the config's `eval:` section (plus the key=value overrides, which
   both runs get). Reports both wall-clocks and the evaluation's own seconds from `metrics.jsonl` (the first
   evaluation includes the reference pass over the real images: the reference cache is a fresh temporary
   folder). The share is eval seconds / wall-clock of the run with evaluation.
2. Feature extraction alone, one process: the config's classifier (if `eval.features` names one) on
   `--images` uint8 images of the config's size, and Inception (torch-fidelity's network, seeded random
   weights written to a temporary folder, never to the torch hub cache) on `--inception-images` images.
3. FID's tr sqrt(S1 S2) at `--fid-dim` dimensions: torch-fidelity's `eigvals` of the product (distgan's
   formulation before), the symmetric one (`eigh` root + `eigvalsh`), and `eigvalsh` alone (the reference's
   root is kept between evaluations during training).

Prints one markdown table per part, the machine and the load average; exits 0. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from distgan.config import Config, load_config  # noqa: E402
from distgan.metrics import scores  # noqa: E402
from distgan.metrics.features import load_extractor  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="demo_digits", help="config name or YAML path (default demo_digits)")
    p.add_argument("--steps", type=int, help="training steps per run (default: the config's train.max_steps)")
    p.add_argument("--nproc", type=int, help="training processes (default: every GPU, or 2 on a CPU, as the demo)")
    p.add_argument("--images", type=int, default=4096, help="images for the classifier's throughput")
    p.add_argument("--inception-images", type=int, default=8, help="images through Inception (0: skip)")
    p.add_argument("--fid-dim", type=int, default=2048, help="feature dimension of the FID timing (0: skip)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for parts 2 and 3 (default: torch's choice)")
    p.add_argument("--skip-training", action="store_true", help="only parts 2 and 3")
    p.add_argument("overrides", nargs="*", help="key=value for both training runs (e.g. eval.every=250)")
    return p.parse_args()


def train_run(args: argparse.Namespace, nproc: int, out: Path, extra: list[str]) -> tuple[float, list[dict]]:
    """(wall-clock seconds, metrics.jsonl rows) of one `accelerate launch launch/train.py` run."""
    dist = ["--multi_gpu", "--num_processes", str(nproc)] if nproc > 1 else ["--num_processes", "1"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *dist, "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "launch/train.py", "--config", args.config]
    cmd += ["--output-dir", str(out), *args.overrides, *extra, "log.progress=false"]
    if args.steps:
        cmd.append(f"train.max_steps={args.steps}")
    env = {**os.environ, "DISTGAN_CACHE": str(out.parent / "reference-cache")}  # the first eval pays the reference
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"error: training failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    metrics = out / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    return wall, rows


def bench_training(args: argparse.Namespace, cfg: Config) -> None:
    nproc = args.nproc or (torch.cuda.device_count() or 2)
    steps = args.steps or cfg.train.max_steps
    if cfg.eval.every is None:
        sys.exit(f"error: {args.config}: eval.every is null; set it (e.g. eval.every=250) to measure evaluation")
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        base_wall, _ = train_run(args, nproc, Path(tmp) / "base" / "run", ["eval.every=null", "checkpoint.best=null"])
        eval_wall, rows = train_run(args, nproc, Path(tmp) / "eval" / "run", [])
    eval_s = sum(r["seconds"] for r in rows)
    what = f"eval.every={cfg.eval.every}, {cfg.eval.num_samples} samples, {','.join(cfg.eval.metrics)}"
    print(f"\n### Training with and without evaluation ({args.config}, {steps} steps, {nproc} processes)\n")
    print("| run | wall-clock s | evaluations | eval s (metrics.jsonl) | eval share | wall-clock difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| without evaluation | {base_wall:.1f} | 0 | - | - | - |")
    print(
        f"| {what} | {eval_wall:.1f} | {len(rows)} | {eval_s:.1f} "
        f"(first {rows[0]['seconds']:.1f}, then median {np.median([r['seconds'] for r in rows[1:]] or [0]):.1f}) "
        f"| {100 * eval_s / eval_wall:.1f}% | {100 * (eval_wall - base_wall) / eval_wall:+.1f}% |"
    )
    rates = [r["images_per_sec"] for r in rows[1:]] or [r["images_per_sec"] for r in rows]
    print(f"\nevaluation images/s (generation + features, all processes, median): {np.median(rates):.0f}")
    print(f"{cfg.eval.features} FID: " + ", ".join(f"step {r['step']}: {r['fid']:.3f}" for r in rows if "fid" in r))


def images_per_second(ext: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> float:
    ext(images[:batch])  # warm-up (first-call allocations)
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        ext(images[i : i + batch])
    return len(images) / (time.perf_counter() - start)


@torch.no_grad()
def bench_features(args: argparse.Namespace, cfg: Config) -> None:
    size, channels = cfg.data.image_size, cfg.data.channels
    g = torch.Generator().manual_seed(0)
    print(f"\n### Feature extraction alone (1 process, {torch.get_num_threads()} threads, batch 64)\n")
    print("| extractor | input | images | images/s |")
    print("| --- | --- | --- | --- |")
    if cfg.eval.features.startswith("classifier:"):
        images = torch.randint(0, 256, (args.images, channels, size, size), dtype=torch.uint8, generator=g)
        rate = images_per_second(load_extractor(cfg.eval.features), images)
        print(f"| {cfg.eval.features} | {size}x{size}x{channels} | {args.images} | {rate:,.0f} |")
    if args.inception_images:
        from tests.metrics.helpers import write_random_inception_weights  # the parity test's seeded weights

        n = args.inception_images
        images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
        with tempfile.TemporaryDirectory(prefix="bench_eval_inception_") as tmp:
            weights = write_random_inception_weights(Path(tmp) / "inception_random.pth")
            rate = images_per_second(load_extractor("inception", weights), images, batch=min(n, 64))
        print(f"| inception (random weights) | {size}x{size}x{channels} -> 299x299 | {n} | {rate:.2f} |")


def bench_fid(dim: int) -> None:
    g = torch.Generator().manual_seed(0)
    sigmas = []
    for shift in (0.0, 0.2):  # post-ReLU features, as pool3's
        x = torch.relu(torch.randn(2 * dim, dim, generator=g, dtype=torch.float64) + shift).numpy()
        sigmas.append(np.cov(x, rowvar=False))
    s1, s2 = sigmas
    mu = np.zeros(dim)

    def eigvals() -> float:  # torch-fidelity's formulation (distgan's until the symmetric one)
        tr_covmean = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).astype("complex128")).real)
        return float(np.trace(s1) + np.trace(s2) - 2 * tr_covmean)

    root = scores.sqrt_psd(s2)
    print(f"\n### FID at {dim} dimensions (numpy float64, {torch.get_num_threads()} threads)\n")
    print("| tr sqrt(S1 S2) from | seconds | FID |")
    print("| --- | --- | --- |")
    cases = [
        ("`eigvals(S1 S2)` (torch-fidelity; distgan before)", eigvals),
        ("`eigh` root of S2, `eigvalsh(R S1 R)` (distgan now)", lambda: scores.fid_from_stats(mu, s1, mu, s2)),
        ("the same, reference root kept (later evaluations)", lambda: scores.fid_from_stats(mu, s1, mu, s2, root)),
    ]
    for name, fn in cases:
        start = time.perf_counter()
        value = fn()
        print(f"| {name} | {time.perf_counter() - start:.2f} | {value:.10g} |")


def main() -> int:
    args = parse_args()
    cfg = load_config(args.config, args.overrides)
    print(f"bench_eval: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")  # fmt: skip
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.skip_training:
        bench_training(args, cfg)
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_features(args, cfg)
    if args.fid_dim:
        bench_fid(args.fid_dim)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
