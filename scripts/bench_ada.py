"""Does ADA keep D from overfitting on little data? StyleGAN2 on a 1,000-image MNIST subset, with and without ADA.

    python scripts/prepare_mnist.py --out data/mnist-1k --subset 1000       # 1,000 training images (seed 0)
    python scripts/train_classifier.py --data data/mnist --out data/mnist-classifier --image-size 32
    python scripts/bench_ada.py --budget 600                                  # 2 x (10 min + evaluation)

Both runs train `stylegan2_mnist` (ADA off / on) as one process for the same wall-clock budget, evaluating the
EMA generator every `--eval-every` steps during training (classifier-FID against the 1,000 training images),
then once at the end against MNIST's 10,000 test images (scripts/bench_recipes.py's scoring). Printed over time:
r_t = E[sign(D(real))] (the ADA paper's overfitting heuristic: 0 when D cannot tell, 1 when it is sure of every
training image; ADA steers it to `augment.ada_target`, 0.6), ADA's p, and the FID. Read from the runs' offline
W&B files, as the dashboard would show them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_recipes import check_inputs, common_arguments, train_and_score  # noqa: E402  (scripts/ is on sys.path when run as a script)

from tests.wandb_offline import read_offline_run  # noqa: E402  (the offline-run reader, no server needed)

RUNS = {"no augmentation": ["augment.ada=false"], "ADA": ["augment.ada=true"]}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_arguments(p, data="data/mnist-1k", budget=600, num_samples=5000, out="runs/bench_ada")
    p.add_argument("--eval-every", type=int, default=500, help="steps between in-training evaluations")
    return p.parse_args()


def history(run_dir: Path) -> list[dict]:
    (offline,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    return read_offline_run(str(offline), wait_s=10)["history"]


def latest(rows: list[dict], key: str, step: int) -> dict:
    """The last history row holding `key` at or before `step` ({} if none)."""
    found = [r for r in rows if key in r and r["_step"] <= step]
    return found[-1] if found else {}


def main() -> None:
    args = parse_args()
    check_inputs(args)
    evals = [f"eval.every={args.eval_every}", f"eval.features=classifier:{args.classifier}"]
    evals += [f"eval.num_samples={args.num_samples}", "log.wandb=offline", "log.every=50"]
    rows = {}
    for i, (name, overrides) in enumerate(RUNS.items(), 1):
        rows[name] = train_and_score(args, i, name, "stylegan2_mnist", overrides + evals)
    print(
        "\n| run | step | kimg | r_t (mean of the last 50 steps) | ADA p | classifier-FID vs the 1,000 train images |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for i, name in enumerate(RUNS, 1):
        rows_ = history(Path(args.out) / f"{i:02d}")
        for row in (r for r in rows_ if "eval/fid" in r):
            step = row["_step"]
            last = latest(rows_, "train/real_sign", step)
            p = latest(rows_, "train/ada_p", step).get("train/ada_p")
            print(
                f"| {name} | {step} | {last.get('train/kimg', float('nan')):.1f} | "
                f"{last.get('train/real_sign', float('nan')):.3f} | {'-' if p is None else f'{p:.3f}'} | "
                f"{row['eval/fid']:.2f} |"
            )
    print("\n| run | steps | kimg | classifier-FID vs the 10,000 test images | KID | precision | recall |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(
            f"| {name} | {r['steps']} | {r['kimg']:.0f} | {r['fid']:.2f} | {r['kid_mean']:.4f} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} |"
        )


if __name__ == "__main__":
    main()
