"""The training loop: config -> data -> family -> step (D phase, G phase) -> log / sample / checkpoint."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from distgan.augment.ada import AdaController
from distgan.config import Config, dump_config
from distgan.data import ImageStream
from distgan.errors import DistganError, TrainingDiverged
from distgan.family import Family
from distgan.logging.images import grid_uint8, save_png
from distgan.logging.stats import RunningStats
from distgan.logging.trackers import wandb_init_kwargs, wandb_mode
from distgan.losses.recipe import Recipe
from distgan.registry import get_family
from distgan.train import checkpoint as ckpt
from distgan.train.ema import EMA
from distgan.train.evaluation import TrainingEval, check_eval_setup
from distgan.train.setup import (
    Nets,
    Precision,
    check_runtime,
    make_accelerator,
    resolve_mixed_precision,
    to_device,
    wrap_models,
)
from distgan.train.signals import StopSignals
from distgan.train.step import Layout, Phase, TrainStep


@dataclass
class Prepared:
    """Everything checked before any process group exists (the fail-fast part of a run)."""

    cfg: Config
    family_cls: type[Family]
    stream: ImageStream
    mixed_precision: str
    checkpoint: Path | None
    notes: list[str]


def prepare(cfg: Config, run_dir: Path, resume: str | None, world_size: int = 1) -> Prepared:
    """Validate runtime settings, open the data (no download), find and check the checkpoint to resume.

    Resuming with another number of processes keeps the global batch by changing train.grad_accum where
    that divides evenly, and says so; otherwise it is an error explaining the arithmetic.
    """
    family_cls = get_family(cfg.model.family)
    check_runtime(cfg)
    mixed_precision = resolve_mixed_precision(cfg)
    check_eval_setup(cfg)
    check_output_dir(run_dir)
    found, notes = ckpt.find_checkpoint(run_dir, resume) if resume else (None, [])
    if resume is None and run_dir.exists() and any(run_dir.iterdir()):
        raise DistganError(
            f"--output-dir {run_dir}: already holds a run; pass --resume latest to continue it, "
            "or choose another --output-dir"
        )
    if found is not None:
        ckpt.check_compatible(found, cfg)
        notes += ckpt.match_global_batch(found, cfg, world_size)
    stream = ImageStream(cfg.data, family_cls.data_columns(cfg.model))
    return Prepared(cfg, family_cls, stream, mixed_precision, found, notes)


def check_output_dir(run_dir: Path) -> None:
    """--output-dir must be a directory we can write in (or one we can create): known before anything starts.

    The check writes a probe file rather than asking os.access, which says yes to root on a read-only mount."""
    if run_dir.exists() and not run_dir.is_dir():
        raise DistganError(f"--output-dir {run_dir}: is a file, not a directory; choose another --output-dir")
    existing = next(p for p in [run_dir, *run_dir.parents] if p.exists())
    if not existing.is_dir():
        raise DistganError(f"--output-dir {run_dir}: cannot be created, {existing} is a file; choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".distgan-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DistganError(
            f"--output-dir {run_dir}: cannot write in {existing} ({e.strerror}); choose a writable --output-dir"
        ) from None


def describe(p: Prepared, world_size: int, nets: Nets | None = None) -> dict[str, Any]:
    """Derived numbers printed at start and by --dry-run (which builds the networks only to count them)."""
    cfg = p.cfg
    family = p.family_cls(cfg.model, p.stream.spec)
    networks = family.build_networks() if nets is None else nets.plain
    global_batch = cfg.train.batch_size * cfg.train.grad_accum * world_size
    return {
        "data": p.stream.source.description,
        "spec": p.stream.spec.to_dict(),
        "processes": world_size,
        "global_batch": global_batch,
        "max_steps": cfg.train.max_steps,
        "images_total": global_batch * cfg.train.max_steps * cfg.train.d_steps,
        "mixed_precision": p.mixed_precision,
        "channels_last": cfg.train.channels_last,
        "compile": cfg.train.compile,
        "loss": cfg.to_dict()["loss"],
        "d_steps": cfg.train.d_steps,
        "spectral_norm": cfg.train.spectral_norm,
        "diffaugment": cfg.augment.diffaugment,
        **{f"params_{name}": sum(t.numel() for t in net.parameters()) for name, net in networks.items()},
        "phases": {ph.name: ph.interval for ph in family.phases(cfg)},
        "lazy_correction": lazy_correction(cfg, family),
        "resume_from": str(p.checkpoint) if p.checkpoint else None,
    }


def build_training(acc: Accelerator, cfg: Config, family: Family) -> tuple[Family, Nets, list[Phase]]:
    """Networks (identically initialised on every rank, then wrapped: spectral norm, memory format, compile,
    DDP; see setup.py) and the family's phases, each with the optimiser of the network it updates."""
    set_seed(cfg.train.seed)  # identical initial weights (and spectral norm's u, v) on every rank
    nets = wrap_models(acc, cfg, family.build_networks())
    specs = family.phases(cfg)
    optimizers = {
        name: _adam(module, *optimizer_settings(cfg, family, specs, name)) for name, module in nets.plain.items()
    }
    return family, nets, [Phase(spec, optimizers[spec.updates]) for spec in specs]


def lazy_correction(cfg: Config, family: Family) -> bool:
    """Whether optimisers of lazily regularised networks get the StyleGAN2 correction (train.lazy_correction)."""
    return family.lazy_correction if cfg.train.lazy_correction is None else cfg.train.lazy_correction


def optimizer_settings(cfg: Config, family: Family, specs: list, network: str) -> tuple[float, tuple[float, ...]]:
    """(lr, betas) of a network's Adam: the config's, and for a network with a lazy regulariser run every k
    steps (with train.lazy_correction) lr x k/(k+1) and betas^(k/(k+1)), the StyleGAN2 paper's correction
    for the steps it takes in addition to its main phase's."""
    lr, betas = float(getattr(cfg.train, family.lr_keys[network])), tuple(cfg.train.betas)
    k = max((s.interval for s in specs if s.updates == network), default=1)
    if k > 1 and lazy_correction(cfg, family):
        ratio = k / (k + 1)
        return lr * ratio, tuple(b**ratio for b in betas)
    return lr, betas


def make_step(
    acc: Accelerator,
    cfg: Config,
    family: Family,
    nets: Nets,
    phases: list[Phase],
    precision: Precision,
    ada: AdaController | None = None,
) -> TrainStep:
    """The training step of this config on this process (its recipe, latents and slice of the global batch;
    `ada`: the ADA controller whose p the augmentation draws take)."""
    layout = Layout(cfg.train.batch_size, cfg.train.grad_accum, acc.num_processes, acc.process_index)
    recipe = dataclasses.replace(Recipe.from_config(cfg, family.default_loss), ada=ada)
    return TrainStep(acc, precision, nets, phases, recipe, family.z_dim, family.spec.image_size, cfg.train.seed, layout)


def _adam(module: torch.nn.Module, lr: float, betas: tuple[float, ...]) -> torch.optim.Optimizer:
    """Fused Adam: one kernel per step, and it skips a non-finite step on the device (see step.py)."""
    try:
        return torch.optim.Adam(module.parameters(), lr=lr, betas=betas, fused=True)
    except RuntimeError:  # a device without the fused kernel
        return torch.optim.Adam(module.parameters(), lr=lr, betas=betas)


def train(p: Prepared, run_dir: Path, signals: StopSignals | None = None) -> dict[str, Any]:
    """Run training to `train.max_steps` (or the time budget); returns where outputs were written.

    `signals`: stop-signal handlers installed earlier (launch/train.py installs them first thing, so a
    signal during start-up is not fatal); by default they are installed here.
    """
    cfg = p.cfg
    mode = wandb_mode(cfg.log.wandb)
    acc = make_accelerator(cfg, str(run_dir), "wandb" if mode != "disabled" else None)
    rank, world, B = acc.process_index, acc.num_processes, cfg.train.batch_size

    family, nets, phases = build_training(acc, cfg, p.family_cls(cfg.model, p.stream.spec))
    precision = Precision(p.mixed_precision, acc.device.type, tuple(nets.plain))
    G = nets.plain[family.generator]
    ema = EMA(G, cfg.train.ema_kimg, cfg.train.ema_rampup) if cfg.train.ema_kimg > 0 else None
    ada = AdaController.from_config(cfg.augment, acc.device)
    state, position, fixed = ckpt.TrainState(), (0, 0), None
    if p.checkpoint:
        held = contents(family, nets, phases, precision, ema=ema)
        if ema is not None and not (p.checkpoint / "G_ema.safetensors").is_file():  # EMA newly switched on
            del held.modules["G_ema"]
            p.notes.append(f"{p.checkpoint.name} has no EMA generator: it starts from the resumed G")
        state, position = ckpt.load_checkpoint(p.checkpoint, held, rank, world)
        if ema is not None and "G_ema" not in held.modules:
            ema.module.load_state_dict(G.state_dict())
        fixed = ckpt.read_tensors(p.checkpoint, "samples")
        if (p.checkpoint / f"{FAMILY_STATE}.safetensors").is_file():
            family.load_state_dict(ckpt.read_tensors(p.checkpoint, FAMILY_STATE))
        if ada is not None and (p.checkpoint / f"{ADA_STATE}.safetensors").is_file():  # else ADA newly on: ada_p
            ada.load_state_tensors(ckpt.read_tensors(p.checkpoint, ADA_STATE))
        p.notes.extend(apply_hyperparameters(cfg, family, phases))
    state.world_size, state.global_batch = world, B * cfg.train.grad_accum * world

    if acc.is_main_process:
        with ckpt.disk_errors(run_dir, "the run directory"):
            (run_dir / "samples").mkdir(parents=True, exist_ok=True)
            ckpt.write_atomic(run_dir / "config.yaml", dump_config(cfg))
            p.notes.extend(ckpt.start_line(run_dir / "checkpoints", p.checkpoint))
            if p.checkpoint and ckpt.exported_step(run_dir / "generator") != state.step:  # missing, or not this line's
                export(cfg, family, nets, ema, state.step, run_dir)
                p.notes.append(f"re-exported {run_dir / 'generator'} from {p.checkpoint.name}")
    if mode != "disabled":
        name = cfg.log.run_name or run_dir.name
        acc.init_trackers(cfg.log.project, cfg.to_dict(), wandb_init_kwargs(run_dir, mode, name, state.wandb_run_id))
        if acc.is_main_process:
            state.wandb_run_id = acc.get_tracker("wandb", unwrap=True).id
    info = describe(p, world, nets)
    say(acc, f"distgan: {cfg.name} ({cfg.model.family}) on {world} x {acc.device.type}: {json.dumps(info)}")
    for note in p.notes:
        say(acc, f"distgan: {note}")

    evaluation = TrainingEval(cfg, family, acc, run_dir) if cfg.eval.every is not None else None
    batches = p.stream.batches(B, cfg.train.seed, rank, world, position)
    if fixed is None:  # fixed sample inputs may come from real data (pix2pix sources)
        head = [next(batches)]
        while len(head) * B < cfg.log.num_samples:  # small per-process batches: gather enough examples
            head.append(next(batches))
        batches = itertools.chain(head, batches)  # still trained on, in order
        real = {k: torch.cat([b[k] for _, b in head]) for k in head[0][1]}
        fixed = family.sample_inputs(cfg.log.num_samples, _cpu_gen(cfg.train.seed), real)
    fixed = {k: v.to(acc.device) for k, v in fixed.items()}
    train_step = make_step(acc, cfg, family, nets, phases, precision, ada)
    running, t_log, images_at_log = RunningStats(), time.perf_counter(), state.images_seen
    t_start, stop, first_step = time.perf_counter(), None, state.step
    signals = signals or StopSignals()
    nonfinite_streak = torch.zeros((), device=acc.device)  # steps in a row with a skipped (non-finite) phase
    bar = tqdm(
        total=cfg.train.max_steps,
        initial=state.step,
        disable=not (acc.is_main_process and cfg.log.progress),
        dynamic_ncols=True,
        mininterval=1.0,
    )
    try:
        while state.step < cfg.train.max_steps and stop is None:
            groups = []  # train.d_steps groups of train.grad_accum micro-batches
            for _ in range(cfg.train.d_steps):
                micro = []
                for _ in range(cfg.train.grad_accum):
                    (epoch, index), batch = next(batches)
                    position = (epoch, index + 1)  # the next batch this rank reads
                    micro.append(to_device(batch, acc.device, cfg.train.channels_last))
                groups.append(micro)
            t_step = time.perf_counter()
            stats = train_step(state.step, groups)
            if cfg.train.compile and state.step == first_step:  # graphs compile at their first call
                say(acc, f"distgan: first step {time.perf_counter() - t_step:.1f} s (torch.compile, cached by torch)")
            running.add(stats)
            skipped = torch.stack([v for k, v in stats.items() if k.startswith("skipped_")]).amax()
            nonfinite_streak = (nonfinite_streak + 1) * skipped  # device arithmetic: no host sync per step
            state.step += 1
            state.images_seen += B * cfg.train.grad_accum * world * cfg.train.d_steps  # real images D has seen
            if ema is not None:  # the half-life counts the images of G's steps
                ema.update(B * cfg.train.grad_accum * world, state.images_seen)
            if ada is not None:  # every ada_interval steps: one all-reduce, p moves, train/ada_p is logged
                real_images = state.global_batch * cfg.train.d_steps
                if tuned := ada.observe(stats, real_images, lambda t: acc.reduce(t, "sum")):
                    acc.log({f"train/{k}": v for k, v in tuned.items()}, step=state.step)
            bar.update(1)

            if state.step % cfg.train.control_every == 0:  # one small all-reduce: every rank decides alike
                stop = control_check(acc, cfg, t_start, signals, nonfinite_streak)
            if stop == "diverged":
                if acc.is_main_process:  # what was saved inside the streak must not be resumed from
                    ckpt.set_aside_nonfinite(run_dir / "checkpoints")
                acc.wait_for_everyone()
                good = [c for c in ckpt.list_checkpoints(run_dir / "checkpoints") if ckpt.nonfinite_streak(c) == 0]
                acc.end_training()  # close the W&B run: what was logged up to here stays readable
                raise TrainingDiverged(
                    f"step {state.step}: {cfg.train.max_nonfinite} steps in a row had non-finite losses or gradients "
                    f"(each skipped); last good checkpoint: {good[-1] if good else 'none'}; lower train.lr_g/lr_d "
                    "or use bf16, then " + ("--resume latest" if good else "start again in a new --output-dir")
                )
            last = state.step >= cfg.train.max_steps or stop is not None
            if state.step % cfg.log.every == 0 or last:
                values = running.reduce(acc)
                now = time.perf_counter()
                values["images_per_sec"] = (state.images_seen - images_at_log) / max(now - t_log, 1e-9)
                values["kimg"] = state.images_seen / 1000
                t_log, images_at_log = now, state.images_seen
                acc.log({f"train/{k}": v for k, v in values.items()}, step=state.step)
                bar.set_postfix(
                    {k: f"{values[k]:.3g}" for k in ("loss_d", "loss_g", "d_real", "d_fake") if k in values}
                )
            if acc.is_main_process and (state.step % cfg.log.sample_every == 0 or last):
                with ckpt.disk_errors(run_dir / "samples", "the sample grid"):
                    write_samples(acc, family, sampled(G, ema), fixed, precision, run_dir, state.step)
            best = False
            if evaluation is not None and evaluation.due(
                state.step, last and stop in (None, "time")
            ):  # every process takes part
                values = evaluation.run(
                    ema.module if ema else G, state.step, state.images_seen, "EMA" if ema else "raw"
                )
                best = evaluation.improved(values)
            if state.step % cfg.checkpoint.every == 0 or last or best:
                state.nonfinite_streak = int(nonfinite_streak.item())  # one host sync per checkpoint
                folder = save_checkpoint(
                    acc, cfg, family, nets, phases, precision, state, position, fixed, run_dir, ema, ada
                )
                if best:
                    evaluation.mark_best(folder, values, state.step)
        bar.close()
    finally:
        signals.restore()
    if stop == "time":
        say(acc, f"distgan: train.max_seconds={cfg.train.max_seconds} spent; stopped at step {state.step}")
    elif stop is not None:
        say(acc, f"distgan: stopped by {stop} at step {state.step}; checkpoint written; resume with --resume latest")
    acc.end_training()
    result = {
        "run_dir": str(run_dir),
        "step": state.step,
        "stopped_by": stop,
        "samples": str(run_dir / "samples" / f"step_{state.step:09d}.png"),
        "checkpoint": str(run_dir / "checkpoints" / (ckpt.read_latest(run_dir / "checkpoints") or "")),
        "generator": str(run_dir / "generator"),
        "wandb": str(run_dir / "wandb") if mode != "disabled" else None,
    }
    say(acc, "distgan: done. " + "  ".join(f"{k}={v}" for k, v in result.items() if v and k != "stopped_by"))
    summary = evaluation.summary() if evaluation is not None else None
    if summary:  # the run's number last, where it is seen
        say(acc, f"distgan: {summary}")
    return result


def say(acc: Accelerator, message: str) -> None:
    """Print once per job (Accelerator.print prints once per node)."""
    if acc.is_main_process:
        print(message, flush=True)


def _cpu_gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def control_check(
    acc: Accelerator, cfg: Config, t_start: float, signals: StopSignals, nonfinite_streak: torch.Tensor
) -> str | None:
    """Why to stop now, agreed by all ranks: "diverged", a signal name, "time", or None to go on."""
    local = torch.stack(
        [
            nonfinite_streak.float(),
            torch.tensor(float(signals.received is not None), device=acc.device),
            torch.tensor(
                float(bool(cfg.train.max_seconds) and time.perf_counter() - t_start > cfg.train.max_seconds),
                device=acc.device,
            ),
        ]
    )
    streak, signalled, over_time = acc.reduce(local, reduction="max").tolist()  # the host sync of this check
    if streak >= cfg.train.max_nonfinite:
        return "diverged"
    if signalled:
        return signals.received or "a signal to another process"
    return "time" if over_time else None


def sampled(G: torch.nn.Module, ema: EMA | None) -> dict[str, torch.nn.Module]:
    """The generators whose grids are written: "samples" (the EMA G when there is one) and "samples_raw"."""
    return {"samples": ema.module, "samples_raw": G} if ema is not None else {"samples": G}


@torch.no_grad()
def write_samples(
    acc: Accelerator,
    family: Family,
    generators: dict[str, torch.nn.Module],
    fixed: dict,
    precision: Precision,
    run_dir: Path,
    step: int,
) -> None:
    """The fixed-noise grids: PNGs under samples/ (the raw G's under samples/raw/) and images in W&B (main process).

    `generators`: W&B key -> G, as `sampled` gives them."""
    grids = {}
    for key, G in generators.items():
        was_training = G.training
        G.eval()  # BN uses running statistics, as the exported generator will
        devices = [acc.device] if acc.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), precision.autocast():  # sampling must not shift training's RNG
            images, nrow = family.panel(fixed, family.generate(G, fixed))
        G.train(was_training)
        grids[key] = grid_uint8(images, nrow)
        folder = run_dir / "samples" / ("raw" if key == "samples_raw" else "")
        folder.mkdir(exist_ok=True)
        save_png(grids[key], folder / f"step_{step:09d}.png")
    if acc.trackers:
        import wandb

        acc.log({k: wandb.Image(grid, caption=f"step {step}") for k, grid in grids.items()}, step=step)


FAMILY_STATE = "family_state"  # the family's running state (path-length mean), when it keeps any
ADA_STATE = "ada"  # the ADA controller's p and statistics, with augment.ada


def contents(
    family: Family,
    nets: Nets,
    phases: list[Phase],
    precision: Precision,
    fixed: dict | None = None,
    ema: EMA | None = None,
    ada: AdaController | None = None,
) -> ckpt.Contents:
    """What a checkpoint of this loop holds: every network, the generator's EMA (`<generator>_ema`), each
    network's optimiser and scaler, the fixed sample inputs, the family's running state and ADA's."""
    tensors = {"samples": fixed} if fixed is not None else {}
    if family.state_dict():
        tensors[FAMILY_STATE] = family.state_dict()
    if ada is not None:
        tensors[ADA_STATE] = ada.state_tensors()
    return ckpt.Contents(
        modules=dict(nets.plain) | ({f"{family.generator}_ema": ema.module} if ema is not None else {}),
        optimizers={phase.updates: phase.optimizer for phase in phases},
        scalers=dict(precision.scalers),
        tensors=tensors,
    )


def save_checkpoint(
    acc: Accelerator,
    cfg: Config,
    family: Family,
    nets: Nets,
    phases: list[Phase],
    precision: Precision,
    state: ckpt.TrainState,
    position: tuple[int, int],
    fixed: dict[str, torch.Tensor],
    run_dir: Path,
    ema: EMA | None = None,
    ada: AdaController | None = None,
) -> Path:
    """Write and publish a checkpoint (all ranks), then export the generator (main process); returns the folder."""
    held = contents(family, nets, phases, precision, fixed, ema, ada)
    folder = ckpt.save_checkpoint(acc, run_dir, held, state, position, dump_config(cfg), cfg.checkpoint.keep)
    if acc.is_main_process:
        export(cfg, family, nets, ema, state.step, run_dir)
    return folder


def export(cfg: Config, family: Family, nets: Nets, ema: EMA | None, step: int, run_dir: Path) -> None:
    """generator/: the EMA G (with the trained G beside it as model_raw.safetensors), or G when there is no EMA."""
    G = nets.plain[family.generator]
    G, raw = (ema.module, G) if ema is not None else (G, None)
    with ckpt.disk_errors(run_dir / "generator", "the exported generator"):
        ckpt.export_generator(G, ckpt.generator_meta(cfg, family, step), run_dir / "generator", raw=raw)


def apply_hyperparameters(cfg: Config, family: Family, phases: list[Phase]) -> list[str]:
    """The config's learning rates and betas (with the lazy-regularisation correction) replace the checkpoint's
    in the loaded optimisers (lowering them after a divergence is the usual fix); returns one note naming what
    changed, if anything did."""
    specs = [phase.spec for phase in phases]
    changed: dict[str, str] = {}  # key -> "key=new (checkpoint: old)", each key once
    for phase in phases:
        key = f"train.{family.lr_keys[phase.updates]}"
        lr, betas = optimizer_settings(cfg, family, specs, phase.updates)
        for group in phase.optimizer.param_groups:
            if group["lr"] != lr:
                changed.setdefault(key, f"{key}={lr:g} (checkpoint: {group['lr']:g})")
            if tuple(group["betas"]) != betas:
                changed.setdefault("train.betas", f"train.betas={list(betas)} (checkpoint: {list(group['betas'])})")
            group["lr"], group["betas"] = lr, betas
    ordered = [changed[k] for k in sorted(changed) if k != "train.betas"] + [changed.get("train.betas", "")]
    ordered = [text for text in ordered if text]
    return [f"resuming with {', '.join(ordered)}: applied to the optimisers"] if ordered else []
