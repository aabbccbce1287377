"""DDP on one machine: 1 process with N threads against N gloo processes with 1 thread each, same global batch.

Both sides run the real training (`launch/train.py`'s `prepare` + `train`, the whole loop) through the real
`accelerate launch`: `--num_processes 1 --num_cpu_threads_per_process N` against `--multi_gpu
--num_processes N --num_cpu_threads_per_process 1` (distgan turns that into gloo DDP on a CPU). The data is
read once through the real pipeline and then repeated from memory (`bench_data.py`'s preloaded side), so
the comparison is the step and its all-reduce, not the loader. Sides alternate (A/B, B/A, ...); the table
gives the median steady-state images/s of each and their ratio (target >= 0.95).

Then, in the N-process group, it times what the all-reduce costs: a gloo all_reduce of a flat fp32 tensor
the size of D's and of G's gradients (each phase all-reduces one network's gradients once per step).

    python scripts/bench_ddp.py                          # demo_digits and cgan_mnist (ngf = ndf = 16), 2 cores
    python scripts/bench_ddp.py --cases demo --seconds 60 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "scripts"))

from bench_data import QUIET, WARMUP_SECONDS, Clock, TimedStream, add_common_args, wait_until_idle  # noqa: E402

# name -> (config, overrides); the global batch is train.batch_size of the 1-process side.
CASES = {
    "demo": ("demo_digits", []),  # dcgan 32x32, ngf = ndf = 32, global batch 64
    "mnist64": ("cgan_mnist", ["model.ngf=16", "model.ndf=16", "train.batch_size=64"]),
}
ALLREDUCE_REPEATS = 50


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    p.add_argument("--procs", type=int, default=2, help="processes of the DDP side = threads of the 1-process side")
    add_common_args(p)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: one process of a side
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--allreduce-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every case")
    return p.parse_args()


def worker(args: argparse.Namespace) -> None:
    """One process of a side, under `accelerate launch`: (DDP) time gradient-sized all-reduces, then train."""
    import torch

    from distgan.config import load_config
    from distgan.train.loop import prepare, train

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = load_config(CASES[args.case][0], [*args.overrides, *QUIET])
    cfg.train.max_steps, cfg.train.max_seconds = 10**9, WARMUP_SECONDS + args.seconds
    run_dir = Path(args.out).parent / "run"  # one run directory for all ranks
    prepared = prepare(cfg, run_dir, None, world)
    result = {"threads": torch.get_num_threads(), "world": world}
    if world > 1:
        result |= time_allreduce(prepared, args.allreduce_port)
    # the global batch (DDP keeps the ranks in step); CPU time of the launcher's whole tree: every rank
    clock = Clock(cfg.train.batch_size * world, root=os.getppid())
    prepared.stream = TimedStream(prepared.stream, preloaded=True, clock=clock)
    train(prepared, run_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.out).write_text(json.dumps(clock.result() | result))


def time_allreduce(prepared: Any, port: int) -> dict[str, float]:
    """Mean seconds of a gloo all_reduce of one flat fp32 tensor the size of G's and of D's parameters, in a
    process group of its own (the training's group is created, and destroyed at its end, by `train`)."""
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    family = prepared.family_cls(prepared.cfg.model, prepared.stream.spec)
    out = {}
    for name, net in (("G", family.build_generator()), ("D", family.build_discriminator())):
        flat = torch.randn(sum(p.numel() for p in net.parameters()))
        for _ in range(5):
            dist.all_reduce(flat)
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(ALLREDUCE_REPEATS):
            dist.all_reduce(flat)
        out[f"allreduce_{name}_ms"] = 1000 * (time.perf_counter() - t0) / ALLREDUCE_REPEATS
        out[f"params_{name}"] = flat.numel()
    dist.destroy_process_group()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(case: str, procs: int, threads: int, args: argparse.Namespace) -> dict:
    """One side through the real launcher; returns rank 0's measurement."""
    name, overrides = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1"]
        cmd += ["--multi_gpu"] if procs > 1 else []
        cmd += ["--num_processes", str(procs), "--num_cpu_threads_per_process", str(threads)]
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
        global_batch = next((int(o.split("=")[1]) for o in overrides if o.startswith("train.batch_size=")), None)
        cmd += [__file__, "--worker", "--case", case, "--seconds", str(args.seconds), "--out", str(out)]
        cmd += ["--allreduce-port", str(free_port()), *overrides]
        if name == "cgan_mnist":
            cmd.append(f"data.path={args.data}")
        cmd += args.overrides
        if global_batch is None:
            from distgan.config import load_config

            global_batch = load_config(name, []).train.batch_size
        cmd.append(f"train.batch_size={global_batch // procs}")  # the same global batch on both sides
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the launcher sets it
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
        if result.returncode != 0 or not out.exists():
            sys.exit(
                f"bench_ddp: {case} with {procs} processes failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
            )
        return json.loads(out.read_text()) | {"global_batch": global_batch}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    args = parse_args()
    if args.worker:
        worker(args)
        return 0
    cases = args.cases.split(",")
    if any(c not in CASES for c in cases):
        sys.exit(f"bench_ddp: --cases from {', '.join(CASES)}")
    n = args.procs
    sides = {f"1 proc x {n} threads": (1, n), f"{n} procs x 1 thread": (n, 1)}
    print(f"cores {len(os.sched_getaffinity(0))}; overrides {args.overrides or 'none'}; load at start {load()}")
    rates: dict[tuple[str, str], list[float]] = {}
    last: dict[str, dict] = {}
    for r in range(args.rounds):
        for case in cases:
            for side in list(sides) if r % 2 == 0 else list(sides)[::-1]:  # A/B, then B/A
                for _ in range(3):
                    wait_until_idle(args.idle_wait)
                    out = spawn(case, *sides[side], args)
                    if out["others"] <= args.max_others:
                        break
                rates.setdefault((case, side), []).append(out["img_s"])
                if out["world"] > 1:
                    last[case] = out
                print(
                    f"round {r} {case:8s} {side:20s} {out['img_s']:8.1f} img/s (torch threads {out['threads']}, "
                    f"global batch {out['global_batch']}); cores {out['cores']:.2f}, others {out['others']:.2f}; "
                    f"load {load()}",
                    flush=True,
                )
    one, many = sides
    print(f"\nload at the end {load()}\n")
    print(f"| case | global batch | {one} img/s | {many} img/s | ratio | median of per-round ratios |")
    print("|---" * 6 + "|")
    for case in cases:
        a, b = rates[(case, one)], rates[(case, many)]
        paired = statistics.median(y / x for x, y in zip(a, b))
        gb = last[case]["global_batch"] if case in last else "-"
        ratio = statistics.median(b) / statistics.median(a)
        print(
            f"| {case} | {gb} | {statistics.median(a):.0f} | {statistics.median(b):.0f} | {ratio:.3f} | {paired:.3f} |"
        )
    print(f"\nall-reduce on gloo, {n} processes (mean of {ALLREDUCE_REPEATS}), against the {n}-process side's step:\n")
    print("| case | G params | D params | all-reduce G ms | all-reduce D ms | step ms | all-reduce share of the step |")
    print("|---" * 7 + "|")
    for case, out in last.items():
        step_ms = 1000 * out["global_batch"] / statistics.median(rates[(case, many)])
        comm = out["allreduce_G_ms"] + out["allreduce_D_ms"]
        print(
            f"| {case} | {out['params_G']:,} | {out['params_D']:,} | {out['allreduce_G_ms']:.2f} | "
            f"{out['allreduce_D_ms']:.2f} | {step_ms:.1f} | {comm / step_ms:.1%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
