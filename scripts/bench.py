"""Steady-state training throughput of distgan's training step against a hand-written PyTorch loop, per setting.

dcgan (default): both sides train the same DCGenerator / DCDiscriminator (same init and seed, Adam 2e-4 /
(0.5, 0.999), BCE-with-logits; a D step on real vs G(z1), then a G step on fresh z2).
stylegan2 (`--family stylegan2 --config-json FILE`, FILE holding official constructor keywords {G_kwargs,
D_kwargs} such as ../shared/stylegan2/small_uncond/config.json): both sides train the same networks with the
paper's four phases at their intervals (Gmain; Greg, path length on half the batch, every 4 steps; Dmain;
Dreg, R1 gamma 1, every 16 steps), style mixing 0.9, Adam 2.5e-3 / (0, 0.99) with the lazy correction, no
augmentation; a timed block is a whole number of 16-step cycles so both sides run the same phase mix.
Either way the sides run on one fixed random batch that is already on the device: the step is measured,
not the data loader. Each setting (precision, channels_last,
torch.compile) is applied to both sides the same way: distgan through its config (the real wrapping step,
`distgan.train.setup.wrap_models`, and the real `TrainStep`), the plain loop by hand. After a warm-up (which
includes compilation) the sides run in alternating timed blocks (A/B, B/A, ...); the table gives each side's
median images/s and their ratio, and every row's speed-up over the plain fp32 eager loop measured in the
same run. The line `fast path / plain fp32 eager: N.NNx` names the fastest distgan setting.

    python scripts/bench.py                                                     # GPU: 64x64, batch 128
    python scripts/bench.py --size 32 --ngf 32 --ndf 32 --batch 64               # CPU-sized
    python scripts/bench.py --size 32 --ngf 32 --ndf 32 --batch 64 --threads 1 --clock cpu   # shared CPU
    python scripts/bench.py --family stylegan2 --config-json ../shared/stylegan2/small_uncond/config.json \
        --batch 32 --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import accelerate  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from distgan.config import Config, build_config  # noqa: E402
from distgan.family import DataSpec  # noqa: E402
from distgan.logging.stats import RunningStats  # noqa: E402
from distgan.models.dcgan import DCDiscriminator, DCGenerator  # noqa: E402
from distgan.models.stylegan2 import config_from_official  # noqa: E402
from distgan.models.stylegan2_networks import Discriminator, Generator  # noqa: E402
from distgan.registry import get_family  # noqa: E402
from distgan.train.loop import build_training, control_check, make_step  # noqa: E402
from distgan.train.setup import DTYPES, Precision, make_accelerator  # noqa: E402

Step = Callable[[int], None]  # one training step; the argument is the step index
BLOCK_SECONDS = {"cuda": 1.0, "cpu": 2.0}  # default length of one timed block


@dataclass(frozen=True)
class Setting:
    """One row: precision, memory format and compilation, applied to both sides."""

    precision: str = "no"
    channels_last: bool = False
    compile: bool = False

    @property
    def name(self) -> str:
        parts = ["fp32" if self.precision == "no" else self.precision]
        parts += ["channels_last"] if self.channels_last else []
        parts += ["compile"] if self.compile else []
        return " + ".join(parts) if len(parts) > 1 else f"{parts[0]} eager"


def parse_setting(text: str) -> Setting:
    """ "bf16+channels_last+compile" -> Setting; "fp32" (or "no") for full precision."""
    words = [w.strip() for w in text.replace(" ", "").split("+") if w.strip()]
    precision = {"fp32": "no"}.get(words[0], words[0]) if words else "no"
    unknown = [w for w in words[1:] if w not in ("channels_last", "compile")]
    if precision not in DTYPES or unknown:
        raise argparse.ArgumentTypeError(f"bad setting {text!r}: PRECISION[+channels_last][+compile]")
    return Setting(precision, "channels_last" in words, "compile" in words)


CPU_SETTINGS = "fp32,fp32+channels_last,fp32+compile,bf16,bf16+channels_last,bf16+channels_last+compile"
GPU_SETTINGS = CPU_SETTINGS + ",fp16+channels_last,fp16+channels_last+compile"
STYLEGAN2_SETTINGS = "fp32"  # its regularisation phases differentiate twice: they run eagerly in fp32
CYCLE = 16  # stylegan2: the phases' intervals (4, 16) repeat every 16 steps


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=["dcgan", "stylegan2"], default="dcgan")
    p.add_argument("--config-json", type=Path, help="stylegan2: official {G_kwargs, D_kwargs} (sets size, widths)")
    p.add_argument("--size", type=int, default=64, help="image resolution, a power of two >= 16 (default 64)")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--settings", help=f"comma-separated rows (default CPU: {CPU_SETTINGS}; GPU adds fp16 rows)")
    p.add_argument("--precision", help="shorthand: these precisions, eager, one row each (e.g. no,bf16)")
    p.add_argument("--steps", type=int, help="steps per timed block (default: ~1 s of steps on GPU, ~2 s on CPU)")
    p.add_argument("--rounds", type=int, default=10, help="timed blocks per side (default 10)")
    p.add_argument("--warmup", type=int, help="warm-up steps per side (default 20 on GPU, 3 on CPU; compile +3)")
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
    if (args.family == "stylegan2") != (args.config_json is not None):
        p.error("--config-json FILE goes with --family stylegan2 (and only with it)")
    if args.config_json is not None:
        try:
            official = json.loads(args.config_json.read_text())
            args.stylegan2 = config_from_official(official["G_kwargs"], official["D_kwargs"])
        except (OSError, ValueError, KeyError) as e:
            p.error(f"--config-json {args.config_json}: {e}")
        args.size = args.stylegan2["data"]["image_size"]
    return args


def make_cfg(args: argparse.Namespace, s: Setting) -> Config:
    train = {"batch_size": args.batch, "mixed_precision": s.precision, "channels_last": s.channels_last}
    if args.family == "stylegan2":
        sg2 = args.stylegan2
        model, data = sg2["model"] | {"style_mixing_prob": 0.9}, {"path": "synthetic"} | sg2["data"]
        train |= {"lr_g": 2.5e-3, "lr_d": 2.5e-3, "betas": [0.0, 0.99]}
        return build_config({"model": model, "data": data, "train": train, "loss": {"r1_gamma": 1.0}})
    model = {"family": "dcgan", "ngf": args.ngf, "ndf": args.ndf}
    data = {"path": "synthetic", "image_size": args.size, "channels": 3}
    return build_config({"model": model, "data": data, "train": train | {"compile": s.compile}})


def distgan_step(acc: Accelerator, cfg: Config, real: torch.Tensor) -> tuple[Step, list[nn.Module]]:
    """The per-step work of distgan.train.loop.train with grad_accum 1 and the batch already on the device:
    `TrainStep` (both phases), the stats, the non-finite streak, the periodic control check and stats reduce;
    tqdm, samples and checkpoints left out."""
    family = get_family(cfg.model.family)(cfg.model, DataSpec(cfg.data.image_size, cfg.data.channels))
    family, nets, phases = build_training(acc, cfg, family)
    precision, running = Precision(cfg.train.mixed_precision, acc.device.type, tuple(nets.plain)), RunningStats()
    train_step = make_step(acc, cfg, family, nets, phases, precision)
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    micro, signals = [{"image": real.contiguous(memory_format=fmt)}], SimpleNamespace(received=None)
    streak, t_start = torch.zeros((), device=acc.device), time.perf_counter()

    def step(i: int) -> None:
        nonlocal streak
        stats = train_step(i, [micro])
        running.add(stats)
        skipped = torch.stack([v for k, v in stats.items() if k.startswith("skipped_")]).amax()
        streak = (streak + 1) * skipped
        if (i + 1) % cfg.train.control_every == 0:
            control_check(acc, cfg, t_start, signals, streak)  # type: ignore[arg-type]  # stand-in: no handlers
        if (i + 1) % cfg.log.every == 0:
            running.reduce(acc)

    return step, [nets.plain["G"], nets.plain["D"]]


def plain_step(cfg: Config, real: torch.Tensor, fused: bool) -> tuple[Step, list[nn.Module]]:
    """The same algorithm as a plain PyTorch loop."""
    return (plain_stylegan2 if cfg.model.family == "stylegan2" else plain_dcgan)(cfg, real, fused)


def plain_dcgan(cfg: Config, real: torch.Tensor, fused: bool) -> tuple[Step, list[nn.Module]]:
    """dcgan as a plain PyTorch loop, with the same precision, memory format and compilation."""
    m, t, device, (B, C, S, _) = cfg.model, cfg.train, real.device, real.shape
    mode = t.mixed_precision
    torch.manual_seed(cfg.train.seed)
    G, D = DCGenerator(m.z_dim, m.ngf, C, S).to(device), DCDiscriminator(m.ndf, C, S).to(device)
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    G, D, real = G.to(memory_format=fmt), D.to(memory_format=fmt), real.contiguous(memory_format=fmt)
    g, d = (torch.compile(G), torch.compile(D)) if t.compile else (G, D)
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
            fake = g(torch.randn(B, m.z_dim, device=device))
            loss_d = bce(d(real), ones) + bce(d(fake.detach()), zeros)
        opt_d.zero_grad()
        scaler_d.scale(loss_d).backward()
        scaler_d.step(opt_d)
        scaler_d.update()
        G.requires_grad_(True)  # G step: no gradients for D's weights
        D.requires_grad_(False)
        with amp():
            loss_g = bce(d(g(torch.randn(B, m.z_dim, device=device))), ones)
        opt_g.zero_grad()
        scaler_g.scale(loss_g).backward()
        scaler_g.step(opt_g)
        scaler_g.update()

    return step, [G, D]


def plain_stylegan2(cfg: Config, real: torch.Tensor, fused: bool) -> tuple[Step, list[nn.Module]]:
    """StyleGAN2's four phases as a plain loop (written from the paper): each phase one optimiser step, the
    regularisers every pl_every / r1_every steps weighted by their interval, the lazy-corrected Adam."""
    m, device, B = cfg.model, real.device, real.shape[0]
    torch.manual_seed(cfg.train.seed)
    family = get_family("stylegan2")(m, DataSpec(cfg.data.image_size, cfg.data.channels))
    G_kwargs, D_kwargs = family.kwargs()
    G, D = Generator(**G_kwargs).to(device), Discriminator(**D_kwargs).to(device)
    c = torch.zeros(B, 0, device=device)

    def adam(net: nn.Module, lr: float, k: int) -> torch.optim.Optimizer:
        r = k / (k + 1)
        betas = tuple(b**r for b in cfg.train.betas)
        return torch.optim.Adam(net.parameters(), lr=lr * r, betas=betas, fused=fused or None)

    opt_g, opt_d = adam(G, cfg.train.lr_g, m.pl_every), adam(D, cfg.train.lr_d, cfg.loss.r1_every)
    pl_mean = torch.zeros((), device=device)

    def generate(n: int, return_ws: bool = False):
        z, mix_z = torch.randn(n, m.z_dim, device=device), torch.randn(n, m.z_dim, device=device)
        layer = torch.randint(1, G.num_ws, (n,), device=device)
        layer = torch.where(torch.rand(n, device=device) < m.style_mixing_prob, layer, G.num_ws)
        return G(z, c[:n], mix_z=mix_z, mix_layer=layer, return_ws=return_ws)

    def update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def step(i: int) -> None:
        nonlocal pl_mean
        G.requires_grad_(True)
        D.requires_grad_(False)
        update(opt_g, torch.nn.functional.softplus(-D(generate(B), c)).mean())  # Gmain
        if i % m.pl_every == 0:  # Greg: path length on B / pl_batch_shrink samples
            img, ws = generate(B // m.pl_batch_shrink, return_ws=True)
            y = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            mean = pl_mean.lerp(lengths.mean(), m.pl_decay)
            pl_mean = mean.detach()
            update(opt_g, (lengths - mean).square().mean() * m.pl_weight * m.pl_every)
        G.requires_grad_(False)
        D.requires_grad_(True)
        fake = generate(B)
        softplus = torch.nn.functional.softplus
        update(opt_d, softplus(D(fake, c)).mean() + softplus(-D(real, c)).mean())  # Dmain
        if i % cfg.loss.r1_every == 0:  # Dreg: R1 on the reals
            x = real.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(D(x, c).sum(), x, create_graph=True)
            update(opt_d, grad.square().sum([1, 2, 3]).mean() * (cfg.loss.r1_gamma / 2) * cfg.loss.r1_every)

    return step, [G, D]


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched (each one a kernel launch or more on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_ops(step: Step, i: int) -> Counter[str]:
    with OpCounter() as counter:
        step(i)
    return counter.ops


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


def real_batch(args: argparse.Namespace, device: torch.device) -> torch.Tensor:
    """One fixed batch of random images in [-1, 1] (like the data pipeline's) on the device."""
    channels = args.stylegan2["data"]["channels"] if args.family == "stylegan2" else 3
    real = torch.rand(args.batch, channels, args.size, args.size, generator=torch.Generator().manual_seed(1))
    return real.to(device) * 2 - 1


def bench(acc: Accelerator, args: argparse.Namespace, s: Setting, reference: Step | None) -> dict[str, list[float]]:
    """Images/s of every timed block of each side, for one setting. `reference` (the plain fp32 eager loop) runs
    in the same rounds as a third side, so that each row's speed-up over it is paired in time too."""
    cfg, device = make_cfg(args, s), acc.device
    real = real_batch(args, device)
    (plain, nets_a), (ours, nets_b) = plain_step(cfg, real, args.plain_fused), distgan_step(acc, cfg, real)
    for a, b in zip(nets_a, nets_b):  # same classes, same init, same seed
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    sides = {"plain": plain, "distgan": ours} | ({"reference": reference} if reference else {})
    warmup = (args.warmup or (20 if device.type == "cuda" else 3)) + (3 if s.compile else 0)
    for name, step in sides.items():
        t0 = time.perf_counter()
        timed(step, 0 if name != "reference" else 10**5, warmup, device)
        if s.compile:
            print(f"  {s.name}: {name} warm-up with compilation: {time.perf_counter() - t0:.1f} s")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    per_step = min(timed(plain, warmup + i, 1, device, clock) for i in range(3))
    steps = args.steps or max(2, round(BLOCK_SECONDS[device.type] / per_step))
    if args.family == "stylegan2":  # whole cycles of the lazy phases, starting at a cycle's first step
        steps = CYCLE * max(1, round(steps / CYCLE))
        warmup = CYCLE * max(1, -(-warmup // CYCLE)) - 3
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:  # A/B then B/A: drift hits both sides
            seconds = timed(sides[name], warmup + 3 + r * steps, steps, device, clock)
            rates[name].append(steps * args.batch / seconds)
    print(f"{s.name}: {args.rounds} rounds x {steps} steps per side; img/s of each block:")
    for name, blocks in rates.items():
        print(f"  {name:8s}" + "".join(f"{x:9.1f}" for x in blocks))
    paired = statistics.median(b / a for a, b in zip(rates["plain"], rates["distgan"]))
    best = max(rates["distgan"]) / max(rates["plain"])
    print(f"  median of per-round ratios {paired:.3f}, ratio of the best blocks {best:.3f}")
    if reference:
        speedup = statistics.median(b / a for a, b in zip(rates["reference"], rates["distgan"]))
        print(f"  distgan / plain fp32 eager (the reference side), median of per-round ratios {speedup:.3f}")
    if max(rates["plain"]) > 1.25 * min(rates["plain"]):
        print("  warning: blocks vary by > 25%: something else is using the device; rerun on an idle machine")
    if not s.compile and s.precision == "no" and not s.channels_last:  # eager ops: what each side launches
        ops = {name: count_ops(step, 10**6) for name, step in sides.items()}
        total = {name: sum(c.values()) for name, c in ops.items()}
        extra = ops["distgan"] - ops["plain"]
        print(
            f"  aten ops per step: plain {total['plain']}, distgan {total['distgan']}; distgan's extra: {dict(extra)}"
        )
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
        acc = make_accelerator(make_cfg(args, Setting()), run_dir=tmp, log_with=None)
        dev = acc.device
        if args.device == "cuda" and dev.type != "cuda":
            sys.exit("bench: --device cuda, but no CUDA device is visible")
        if args.clock == "cpu" and dev.type != "cpu":
            sys.exit("bench: --clock cpu measures host CPU time; it is for --device cpu only")
        if args.precision:
            settings = [Setting(m.strip()) for m in args.precision.split(",")]
        else:
            default = GPU_SETTINGS if dev.type == "cuda" else CPU_SETTINGS
            default = STYLEGAN2_SETTINGS if args.family == "stylegan2" else default
            settings = [parse_setting(t) for t in (args.settings or default).split(",")]
        if Setting() not in settings:
            settings.insert(0, Setting())  # the reference of every row's speed-up
        print(f"torch {torch.__version__}, accelerate {accelerate.__version__}; {dev}: {device_name(dev)}")
        nets = f"dcgan ngf {args.ngf} ndf {args.ndf}" if args.family == "dcgan" else f"stylegan2 {args.config_json}"
        print(f"{nets}; data: one fixed random batch already on {dev.type}, no loader")
        print(f"Adam: distgan's own (fused where available), plain {'fused' if args.plain_fused else 'default'}")
        print(f"clock: {'CPU time of this process' if args.clock == 'cpu' else 'wall time'}")
        print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        reference, _ = plain_step(make_cfg(args, Setting()), real_batch(args, dev), args.plain_fused)
        table = {}
        for s in settings:
            rates = bench(acc, args, s, None if s == Setting() else reference)
            ref = rates.get("reference", rates["plain"])
            table[s] = {side: statistics.median(blocks) for side, blocks in rates.items()}
            table[s]["vs_plain"] = statistics.median(b / a for a, b in zip(rates["plain"], rates["distgan"]))
            table[s]["vs_reference"] = statistics.median(b / a for a, b in zip(ref, rates["distgan"]))
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        header = (
            "| device | setting | size | batch | plain img/s | distgan img/s | distgan / plain | vs plain fp32 eager |"
        )
        rows = [header, "|---" * 8 + "|"]
        for s, m in table.items():
            row = [dev.type, s.name, args.size, args.batch, f"{m['plain']:.1f}", f"{m['distgan']:.1f}"]
            row += [f"{m['vs_plain']:.3f}", f"{m['vs_reference']:.2f}x"]
            rows.append("| " + " | ".join(map(str, row)) + " |")
        print("\n" + "\n".join(rows))
        print("ratios: medians of per-round ratios (blocks adjacent in time); img/s: medians of the blocks")
        fast = max(table, key=lambda s: table[s]["vs_reference"])
        print(f"\nfast path: distgan {fast.name}")
        print(f"fast path / plain fp32 eager: {table[fast]['vs_reference']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
