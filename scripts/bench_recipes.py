"""Do the recipes pay off? Train each recipe for the same wall-clock budget on real MNIST, score the EMA generator.

    python scripts/prepare_mnist.py                                          # data/mnist (once)
    python scripts/train_classifier.py --data data/mnist --out data/mnist-classifier --image-size 32
    python scripts/bench_recipes.py --budget 300                             # ~6 x (5 min + evaluation)

Every recipe runs `launch/train.py` as one process on the same machine with `train.max_seconds=--budget`
(so the faster recipes take more steps), then `launch/evaluate.py` scores its exported (EMA) generator with
the MNIST classifier's features against the test split: classifier-FID, KID, precision, recall. The table
(markdown) ends the output; the best FID is compared with the seed recipe's. Classifier numbers are only
comparable with each other, not with papers' Inception FID.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# name -> (config, overrides): the seed recipe first (the baseline of the comparison)
RECIPES: dict[str, tuple[str, list[str]]] = {
    "seed (dcgan, bce)": ("dcgan_mnist", []),
    "dcgan + hinge + SN(D)": ("dcgan_mnist", ["loss.adversarial=hinge", "train.spectral_norm=D"]),
    "dcgan + R1": ("dcgan_mnist", ["loss.r1_gamma=0.1", "loss.r1_every=4"]),
    "dcgan + DiffAugment": ("dcgan_mnist", ["augment.diffaugment=color,translation,cutout"]),
    "sngan + hinge": ("sngan_mnist", []),
    "wgan-gp (d_steps 5)": (
        "dcgan_mnist",
        ["model.norm=none", "loss.adversarial=wgan", "loss.gp_lambda=10", "train.d_steps=5"]
        + ["train.lr_g=1e-4", "train.lr_d=1e-4", "train.betas=[0.0,0.9]"],
    ),
    "stylegan2": ("stylegan2_mnist", ["augment.ada=false"]),
    "stylegan2 + ADA": ("stylegan2_mnist", []),
}


def common_arguments(p: argparse.ArgumentParser, data: str, budget: float, num_samples: int, out: str) -> None:
    """The options every quality benchmark takes (this one and scripts/bench_ada.py)."""
    p.add_argument("--data", default=data, help="real MNIST parquet (scripts/prepare_mnist.py)")
    p.add_argument("--classifier", default="data/mnist-classifier", help="scripts/train_classifier.py output")
    p.add_argument("--budget", type=float, default=budget, help="training seconds per run")
    p.add_argument("--num-samples", type=int, default=num_samples, help="generated images per evaluation")
    p.add_argument("--out", default=out, help="run directories (one per run)")
    p.add_argument("--extra", nargs="*", default=[], help="overrides for every run, e.g. train.batch_size=32")


def check_inputs(args: argparse.Namespace) -> None:
    """--data and --classifier exist, before anything trains."""
    for path, what in ((args.data, "--data (scripts/prepare_mnist.py)"), (args.classifier, "--classifier")):
        if not (REPO / path).exists() and not Path(path).exists():
            raise SystemExit(f"error: {what}: {path} does not exist")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_arguments(p, data="data/mnist", budget=300, num_samples=10000, out="runs/bench_recipes")
    p.add_argument("--only", default="", help="comma-separated recipe numbers (1-based) to run; default: all")
    return p.parse_args()


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)


def train_and_score(args: argparse.Namespace, index: int, name: str, config: str, overrides: list[str]) -> dict:
    out = Path(args.out) / f"{index:02d}"
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} already holds a run; remove it or pass another --out")
    cmd = [sys.executable, "launch/train.py", "--config", config, "--output-dir", str(out)]
    cmd += [f"data.path={args.data}", "train.max_steps=10000000", f"train.max_seconds={args.budget}"]
    cmd += ["log.wandb=off", "log.progress=false", "checkpoint.every=10000000", *overrides, *args.extra]
    start = time.perf_counter()
    trained = run(cmd)
    wall = time.perf_counter() - start
    if trained.returncode != 0:
        raise SystemExit(f"error: {name}: training failed\n{trained.stderr[-3000:]}")
    latest = (out / "checkpoints" / "latest").read_text().strip()
    state = json.loads((out / "checkpoints" / latest / "state.json").read_text())
    cmd = [sys.executable, "launch/evaluate.py", "--generator", str(out / "generator"), "--data", args.data]
    cmd += ["--split", "test", "--features", f"classifier:{args.classifier}", "--metrics", "fid,kid,pr"]
    cmd += ["--num-samples", str(args.num_samples), "--cache-dir", str(Path(args.out) / "reference-cache")]
    scored = run(cmd)
    if scored.returncode != 0:
        raise SystemExit(f"error: {name}: evaluation failed\n{scored.stderr[-3000:]}")
    metrics = json.loads(scored.stdout.strip().splitlines()[-1])
    # images/s over the training budget (real images D saw, start-up excluded)
    row = {"recipe": name, "steps": state["step"], "kimg": state["images_seen"] / 1000}
    row |= {"img_per_s": state["images_seen"] / args.budget, "wall_s": wall} | metrics
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    args = parse_args()
    check_inputs(args)
    chosen = {int(i) for i in args.only.split(",") if i} or set(range(1, len(RECIPES) + 1))
    print(f"budget {args.budget:g} s per recipe, {args.num_samples} samples per evaluation; load: {os.getloadavg()}")
    rows = [
        train_and_score(args, i, name, config, overrides)
        for i, (name, (config, overrides)) in enumerate(RECIPES.items(), 1)
        if i in chosen
    ]
    print("\n| recipe | steps | kimg | img/s | classifier-FID | KID | precision | recall |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['steps']} | {r['kimg']:.0f} | {r['img_per_s']:.0f} | {r['fid']:.3f} | "
            f"{r['kid_mean']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} |"
        )
    seed = next((r for r in rows if r["recipe"].startswith("seed")), None)
    if seed is not None and len(rows) > 1:
        best = min(rows, key=lambda r: r["fid"])
        print(
            f"\nbest: {best['recipe']}: classifier-FID {best['fid']:.3f} = {best['fid'] / seed['fid']:.2f}x the seed's"
        )


if __name__ == "__main__":
    main()
