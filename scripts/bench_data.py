"""Does the data pipeline keep up with training, and what does it cost the training step?

Two measurements per case (a config plus overrides), each side in a fresh process, sides interleaved:

- loader: images/s that `ImageStream.batches` (datasets streaming from local parquet, decode, resize,
  crop, DataLoader workers, collate, scaling, host-to-device) delivers to one process, alone;
- preloaded: images/s of real training (`distgan.train.loop.train`, the whole loop) on batches held in
  memory (its first epoch read once through the same pipeline, then repeated): what the training step consumes;
- real: images/s of the same training fed by the real pipeline.

It prints `loader / consumption` (target >= 2) and `real / preloaded` (target >= 0.95), the medians over
rounds, and each side's CPU time per image (all its processes, workers included).

    python scripts/bench_data.py                        # the default cases, 3 rounds of 40 s per side
    python scripts/bench_data.py --cases mnist64 --seconds 120 --rounds 2
    python scripts/bench_data.py --cases demo data.num_workers=0        # overrides apply to every case
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

# name -> (config, overrides): cgan_mnist as the issue measured it (ngf = ndf = 16, batch 64), and the demo.
CASES = {
    "mnist32": ("cgan_mnist", ["model.ngf=16", "model.ndf=16", "train.batch_size=64", "data.image_size=32"]),
    "mnist64": ("cgan_mnist", ["model.ngf=16", "model.ndf=16", "train.batch_size=64"]),
    "demo": ("demo_digits", []),
}
QUIET = ["log.wandb=off", "log.progress=false", "log.sample_every=1000000", "checkpoint.every=1000000"]
WARMUP_SECONDS = 8.0  # start-up, shuffle-buffer fill and the first steps are left out


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Timing, data and shared-machine flags of this benchmark and of bench_ddp.py."""
    p.add_argument("--seconds", type=float, default=40.0, help="timed seconds per side per round (after warm-up)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data", default=str(REPO / "data" / "mnist"), help="MNIST parquet (scripts/prepare_mnist.py)")
    p.add_argument(
        "--idle-wait",
        type=float,
        default=0,
        help="before each side, wait up to this many seconds "
        "for other processes to leave the CPU idle (a shared machine)",
    )
    p.add_argument(
        "--max-others",
        type=float,
        default=float("inf"),
        help="repeat a side (up to 3 times) when other processes used more than this many cores meanwhile",
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    p.add_argument("--sides", default="loader,preloaded,real", help="comma list of loader, preloaded, real")
    add_common_args(p)
    p.add_argument("--side", help=argparse.SUPPRESS)  # internal: run one side in this process
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every case")
    return p.parse_args()


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU time of a process (default: this one) and all its descendants, live or already reaped (old workers)."""
    process = psutil.Process(root)
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:  # exited in between
            pass
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(max_wait: float, below: float = 0.15, window: float = 5.0) -> None:
    """Wait (at most max_wait s) until the machine's other work uses fewer than `below` cores over `window` s."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        b0 = machine_busy_seconds()
        time.sleep(window)
        if (machine_busy_seconds() - b0) / window < below:
            return


class Clock:
    """Marks (batches handed out, wall time, CPU time of this process tree and of the whole machine) once the
    warm-up is over; rates are over the marks. `others` is the cores other processes used meanwhile."""

    def __init__(self, batch: int, root: int | None = None) -> None:
        self.batch, self.root, self.count, self.t0 = batch, root, 0, time.perf_counter()
        self.marks: list[tuple[int, float, float, float]] = []

    def tick(self) -> None:
        self.count += 1
        now = time.perf_counter()
        if now - self.t0 >= WARMUP_SECONDS and (not self.marks or self.count % 10 == 0):
            self.marks.append((self.count, now, tree_cpu_seconds(self.root), machine_busy_seconds()))

    def result(self) -> dict[str, float]:
        (n0, t0, c0, m0), (n1, t1, c1, m1) = self.marks[0], self.marks[-1]
        images, seconds = (n1 - n0) * self.batch, t1 - t0
        return {
            "img_s": images / seconds,
            "cpu_ms_per_img": 1000 * (c1 - c0) / images,
            "cores": (c1 - c0) / seconds,
            "others": max(0.0, (m1 - m0) - (c1 - c0)) / seconds,
            "seconds": seconds,
        }


class TimedStream:
    """Stands in for `ImageStream` in `train()`: the real stream's batches (or the first ones, repeated from
    memory), with a clock on every batch the loop takes."""

    def __init__(self, stream: Any, preloaded: bool, clock: Clock) -> None:
        self.stream, self.preloaded, self.clock = stream, preloaded, clock
        self.spec, self.source = stream.spec, stream.source

    def batches(self, batch_size: int, seed: int, rank: int, world_size: int, position=(0, 0)) -> Iterator:
        it = self.stream.batches(batch_size, seed, rank, world_size, position)
        if self.preloaded:
            held = []  # the whole first epoch: the data held as decoded tensors, as a plain loop over MNIST would
            for (epoch, _), batch in it:
                if epoch > 0:
                    break
                held.append(batch)
            it.close()  # its DataLoader workers exit
            it = (((i // len(held), i % len(held)), held[i % len(held)]) for i in range(10**12))
        for item in it:
            self.clock.tick()
            yield item


def run_side(side: str, name: str, overrides: list[str], seconds: float) -> dict[str, float]:
    """One side of one case in this process."""
    import torch

    from distgan.config import load_config

    cfg = load_config(name, [*overrides, *QUIET])
    clock = Clock(cfg.train.batch_size)
    if side == "loader":
        from distgan.data import ImageStream
        from distgan.registry import get_family

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        stream = ImageStream(cfg.data, get_family(cfg.model.family).data_columns(cfg.model))
        for _, batch in stream.batches(cfg.train.batch_size, cfg.train.seed, 0, 1):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}  # as the training loop does
            clock.tick()
            if clock.marks and clock.marks[-1][1] - clock.marks[0][1] >= seconds:
                break
        return clock.result()
    from distgan.train.loop import prepare, train

    cfg.train.max_steps, cfg.train.max_seconds = 10**9, WARMUP_SECONDS + seconds
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare(cfg, Path(tmp) / "run", None)
        prepared.stream = TimedStream(prepared.stream, side == "preloaded", clock)
        train(prepared, Path(tmp) / "run")
    return clock.result()


def spawn(side: str, case: str, args: argparse.Namespace) -> dict[str, float]:
    name, overrides = CASES[case]
    cmd = [sys.executable, __file__, "--side", side, "--case", case, "--seconds", str(args.seconds)]
    cmd += [*overrides, f"data.path={args.data}" if name == "cgan_mnist" else "", *args.overrides]
    result = subprocess.run([c for c in cmd if c], capture_output=True, text=True, cwd=REPO)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        sys.exit(f"bench_data: {side} {case} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    args = parse_args()
    if args.side:  # a child: one measurement, one JSON line
        name, overrides = CASES[args.case]
        print(json.dumps(run_side(args.side, name, args.overrides, args.seconds)))
        return 0
    cases, sides = args.cases.split(","), args.sides.split(",")
    if any(c not in CASES for c in cases) or any(s not in ("loader", "preloaded", "real") for s in sides):
        sys.exit(f"bench_data: --cases from {', '.join(CASES)}; --sides from loader, preloaded, real")
    if any(CASES[c][0] == "cgan_mnist" for c in cases) and not Path(args.data).is_dir():
        sys.exit(f"bench_data: no MNIST at {args.data}; run scripts/prepare_mnist.py first")
    print(f"cores {len(os.sched_getaffinity(0))}; overrides {args.overrides or 'none'}; load at start {load()}")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for case in cases:
            order = sides if r % 2 == 0 else sides[::-1]  # drift in the machine's load hits every side alike
            for side in order:
                for _ in range(3):
                    wait_until_idle(args.idle_wait)
                    out = spawn(side, case, args)
                    if out["others"] <= args.max_others:
                        break
                results.setdefault((case, side), []).append(out)
                print(
                    f"round {r} {case:8s} {side:9s} {out['img_s']:8.1f} img/s  {out['cpu_ms_per_img']:.3f} CPU ms/img  "
                    f"cores {out['cores']:.2f}, others {out['others']:.2f}  load {load()}",
                    flush=True,
                )
    med = {key: statistics.median(o["img_s"] for o in outs) for key, outs in results.items()}
    cpu = {key: statistics.median(o["cpu_ms_per_img"] for o in outs) for key, outs in results.items()}
    print(f"\nload at the end {load()}\n")
    others = {key: max(o["others"] for o in outs) for key, outs in results.items()}
    print(
        "| case | loader img/s | training img/s (preloaded) | training img/s (real data) | loader / consumption "
        "| real / preloaded | CPU ms/img loader, preloaded, real | other processes (cores, max) |"
    )
    print("|---" * 8 + "|")
    for case in cases:
        get = {side: med.get((case, side)) for side in ("loader", "preloaded", "real")}
        ratio = get["loader"] / get["preloaded"] if get["loader"] and get["preloaded"] else None
        e2e = get["real"] / get["preloaded"] if get["real"] and get["preloaded"] else None
        cells = [f"{get[s]:.0f}" if get[s] else "-" for s in ("loader", "preloaded", "real")]
        cpus = ", ".join(f"{cpu[(case, s)]:.3f}" if (case, s) in cpu else "-" for s in ("loader", "preloaded", "real"))
        fmt = [f"{ratio:.2f}x" if ratio else "-", f"{e2e:.3f}" if e2e else "-"]
        most = max(v for (c, _), v in others.items() if c == case)
        print(f"| {case} | " + " | ".join(cells + fmt) + f" | {cpus} | {most:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
