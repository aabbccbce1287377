"""Steady-state training throughput of distgan's dcgan step against a hand-written PyTorch loop.

Both sides train the same DCGenerator / DCDiscriminator (same init and seed, Adam 2e-4 / (0.5, 0.999),
BCE-with-logits; a D step on real vs G(z1), then a G step on fresh z2) on one fixed random batch that is
already on the device: the step is measured, not the data loader. After a warm-up the sides run in
alternating timed blocks (A/B, B/A, ...); the table gives each side's median images/s and their ratio.

    python scripts/bench.py --precision no,bf16                                  # GPU: 64x64, batch 128
    python scripts/bench.py --size 32 --ngf 32 --ndf 32 --batch 64 --precision no,bf16   # CPU-sized
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import accelerate  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from distgan.config import Config, build_config  # noqa: E402
from distgan.family import DataSpec  # noqa: E402
from distgan.logging.stats import RunningStats  # noqa: E402
from distgan.models.dcgan import DCDiscriminator, DCGenerator  # noqa: E402
from distgan.registry import get_family  # noqa: E402
from distgan.train.loop import build_training, control_check, make_step  # noqa: E402
from distgan.train.setup import DTYPES, Precision, make_accelerator  # noqa: E402

Step = Callable[[int], None]  # one training step; the argument is the step index
BLOCK_SECONDS = {"cuda": 1.0, "cpu": 2.0}  # default length of one timed block


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64, help="image resolution, a power of two >= 16 (default 64)")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision", default="no", help="no, bf16, fp16 or a comma list, one table row each")
    p.add_argument("--steps", type=int, help="steps per timed block (default: ~1 s of steps on GPU, ~2 s on CPU)")
    p.add_argument("--rounds", type=int, default=10, help="timed blocks per side (default 10)")
    p.add_argument("--warmup", type=int, help="warm-up steps per side (default 20 on GPU, 3 on CPU)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--plain-fused", action="store_true", help="fused Adam on the plain side too (distgan uses it)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: this process's CPU time instead of wall time, for a CPU shared with other jobs (use --threads 1)",
    )
    args = p.parse_args()
    args.precision = [m.strip() for m in args.precision.split(",")]
    if bad := [m for m in args.precision if m not in DTYPES]:
        p.error(f"--precision: unknown {bad}; choose from {', '.join(DTYPES)}")
    return args


def make_cfg(args: argparse.Namespace, mode: str) -> Config:
    model = {"family": "dcgan", "ngf": args.ngf, "ndf": args.ndf}
    data = {"path": "synthetic", "image_size": args.size, "channels": 3}
    return build_config({"model": model, "data": data, "train": {"batch_size": args.batch, "mixed_precision": mode}})


def distgan_step(acc: Accelerator, cfg: Config, mode: str, real: torch.Tensor) -> tuple[Step, list[nn.Module]]:
    """The per-step body of distgan.train.loop.train: grad_accum 1, the batch already on the device, the
    periodic stats reduce and control check kept; tqdm, samples and checkpoints left out."""
    family = get_family("dcgan")(cfg.model, DataSpec(cfg.data.image_size, cfg.data.channels))
    family, nets, phases = build_training(acc, cfg, family)
    precision, running = Precision(mode, acc.device.type), RunningStats()
    train_step = make_step(acc, cfg, family, nets, phases, precision)
    micro, signals = [{"image": real}], SimpleNamespace(received=None)
    streak, t_start = torch.zeros((), device=acc.device), time.perf_counter()

    def step(i: int) -> None:
        nonlocal streak
        stats = train_step(i, [micro])
        running.add(stats)
        skipped = torch.maximum(stats["skipped_D"], stats["skipped_G"]).to(acc.device)
        streak = (streak + 1) * skipped
        if (i + 1) % cfg.train.control_every == 0:
            control_check(acc, cfg, t_start, signals, streak)  # type: ignore[arg-type]  # stand-in: no handlers
        if (i + 1) % cfg.log.every == 0:
            running.reduce(acc)

    return step, [nets.G_plain, nets.D_plain]


def plain_step(cfg: Config, mode: str, real: torch.Tensor, fused: bool) -> tuple[Step, list[nn.Module]]:
    """The same algorithm as a plain PyTorch loop."""
    m, device, (B, C, S, _) = cfg.model, real.device, real.shape
    torch.manual_seed(cfg.train.seed)
    G, D = DCGenerator(m.z_dim, m.ngf, C, S).to(device), DCDiscriminator(m.ndf, C, S).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=fused or None)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=fused or None)
    scaler_g, scaler_d = (torch.amp.GradScaler(device.type, enabled=mode == "fp16") for _ in "GD")
    bce, ones, zeros = nn.BCEWithLogitsLoss(), torch.ones(B, device=device), torch.zeros(B, device=device)

    def amp() -> torch.autocast:
        return torch.autocast(device.type, dtype=DTYPES[mode] or torch.float32, enabled=mode != "no")

    def step(i: int) -> None:
        G.requires_grad_(False)  # D step: G only makes the fakes
        D.requires_grad_(True)
        with amp():
            fake = G(torch.randn(B, m.z_dim, device=device))
            loss_d = bce(D(real), ones) + bce(D(fake.detach()), zeros)
        opt_d.zero_grad()
        scaler_d.scale(loss_d).backward()
        scaler_d.step(opt_d)
        scaler_d.update()
        G.requires_grad_(True)  # G step: no gradients for D's weights
        D.requires_grad_(False)
        with amp():
            loss_g = bce(D(G(torch.randn(B, m.z_dim, device=device))), ones)
        opt_g.zero_grad()
        scaler_g.scale(loss_g).backward()
        scaler_g.step(opt_g)
        scaler_g.update()

    return step, [G, D]


def timed(
    step: Step, first: int, n: int, device: torch.device, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Seconds for steps first .. first+n-1, with the device synchronised before each clock read."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = clock()
    for i in range(first, first + n):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - t0


def bench(acc: Accelerator, args: argparse.Namespace, mode: str) -> dict[str, list[float]]:
    """Images/s of every timed block of each side, for one precision."""
    cfg, device = make_cfg(args, mode), acc.device
    real = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(device)
    real = real * 2 - 1  # images in [-1, 1], like the data pipeline's
    (plain, nets_a), (ours, nets_b) = plain_step(cfg, mode, real, args.plain_fused), distgan_step(acc, cfg, mode, real)
    for a, b in zip(nets_a, nets_b):  # same classes, same init, same seed
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    sides = {"plain": plain, "distgan": ours}
    warmup = args.warmup or (20 if device.type == "cuda" else 3)
    for step in sides.values():
        timed(step, 0, warmup, device)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    per_step = min(timed(plain, warmup + i, 1, device, clock) for i in range(3))
    steps = args.steps or max(2, round(BLOCK_SECONDS[device.type] / per_step))
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:  # A/B then B/A: drift hits both sides
            seconds = timed(sides[name], warmup + 3 + r * steps, steps, device, clock)
            rates[name].append(steps * args.batch / seconds)
    print(f"{mode}: {args.rounds} rounds x {steps} steps per side; img/s of each block:")
    for name, blocks in rates.items():
        print(f"  {name:8s}" + "".join(f"{x:9.1f}" for x in blocks))
    paired = statistics.median(b / a for a, b in zip(rates["plain"], rates["distgan"]))
    best = max(rates["distgan"]) / max(rates["plain"])
    print(f"  median of per-round ratios {paired:.3f}, ratio of the best blocks {best:.3f}")
    if max(rates["plain"]) > 1.25 * min(rates["plain"]):
        print("  warning: blocks vary by > 25%: something else is using the device; rerun on an idle machine")
    return rates


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"  # make_accelerator would otherwise take the GPU
    with tempfile.TemporaryDirectory() as tmp:
        acc = make_accelerator(make_cfg(args, "no"), run_dir=tmp, log_with=None)
        dev = acc.device
        if args.device == "cuda" and dev.type != "cuda":
            sys.exit("bench: --device cuda, but no CUDA device is visible")
        if args.clock == "cpu" and dev.type != "cpu":
            sys.exit("bench: --clock cpu measures host CPU time; it is for --device cpu only")
        print(f"torch {torch.__version__}, accelerate {accelerate.__version__}; {dev}: {device_name(dev)}")
        print(f"dcgan ngf {args.ngf} ndf {args.ndf}; data: one fixed random batch already on {dev.type}, no loader")
        print(f"Adam: distgan's own (fused where available), plain {'fused' if args.plain_fused else 'default'}")
        print(f"clock: {'CPU time of this process' if args.clock == 'cpu' else 'wall time'}")
        rows = ["| device | precision | size | batch | plain img/s | distgan img/s | ratio |", "|---" * 7 + "|"]
        for mode in args.precision:
            rates = bench(acc, args, mode)
            plain, ours = statistics.median(rates["plain"]), statistics.median(rates["distgan"])
            row = [dev.type, mode, args.size, args.batch, f"{plain:.1f}", f"{ours:.1f}", f"{ours / plain:.3f}"]
            rows.append("| " + " | ".join(map(str, row)) + " |")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
