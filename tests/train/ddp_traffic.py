"""Run under `accelerate launch --multi_gpu --num_processes 2`: count gradient all-reduce bytes per phase.

A DDP communication hook on G and on D records every bucket it all-reduces (then all-reduces it as
usual). Steps go through the framework's own build_training / TrainStep / run_phase, with BatchNorm on
(D runs twice, real then fake, before one backward), with gradient accumulation 1 and 2, and with three
recipes: plain BCE, lazy R1 (every 2nd D step: a double backward through the DDP-wrapped D) and WGAN-GP
with DiffAugment; then StyleGAN2's four phases (Gmain, Greg: path length, a double backward through G's
DDP; Dmain; Dreg: R1), each due on the steps run, with style mixing on.
Writes {"rows": [...], "numel": {...}, "stylegan2": {...}} as JSON to argv[1] on the main process.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks  # noqa: E402

from distgan.config import build_config  # noqa: E402
from distgan.errors import exit_process  # noqa: E402
from distgan.family import DataSpec  # noqa: E402
from distgan.losses.recipe import Recipe  # noqa: E402
from distgan.registry import get_family  # noqa: E402
from distgan.train.loop import build_training  # noqa: E402
from distgan.train.setup import Precision, make_accelerator  # noqa: E402
from distgan.train.step import Layout, TrainStep, run_phase  # noqa: E402


def main(out: str) -> None:
    raw = {"model": {"family": "dcgan", "z_dim": 8, "ngf": 8, "ndf": 8}, "data": {"path": "unused", "image_size": 16}}
    cfg = build_config(raw)
    acc = make_accelerator(cfg, tempfile.mkdtemp(), None)
    assert acc.num_processes == 2, f"expected 2 connected processes, got {acc.num_processes}"
    family, nets, phases = build_training(acc, cfg, get_family("dcgan")(cfg.model, DataSpec(16, 3)))
    sent = {"G": 0, "D": 0}
    nets.ddp["G"].register_comm_hook(None, _counting(sent, "G"))
    nets.ddp["D"].register_comm_hook(None, _counting(sent, "D"))
    precision, rows, B = Precision("no", acc.device.type, tuple(nets.plain)), [], 4
    recipes = {
        "bce": Recipe(),
        "lazy_r1": Recipe(r1_gamma=1.0, r1_every=2),
        "gp_diffaugment": Recipe(adversarial="wgan", gp_lambda=10.0, diffaugment="color,translation,cutout"),
    }
    for name, recipe in recipes.items():
        for accum in (1, 2):
            layout = Layout(B, accum, acc.num_processes, acc.process_index)
            train_step = TrainStep(acc, precision, nets, phases, recipe, family.z_dim, 16, 0, layout)
            for step in range(2):
                micro = [{"image": torch.rand(B, 3, 16, 16) * 2 - 1} for _ in range(accum)]
                for index, phase in enumerate(phases):
                    before = dict(sent)
                    r1_step = phase.name == "D" and recipe.is_r1_step(step)
                    stats = run_phase(
                        acc, precision, nets, phase, micro, train_step.inputs(phase.spec, (0, step, index), r1_step)
                    )
                    frozen = nets.plain["G"] if phase.name == "D" else nets.plain["D"]
                    rows.append(
                        {
                            "recipe": name,
                            "accum": accum,
                            "phase": phase.name,
                            "penalties": sorted(k for k in stats if k in ("r1", "gp")),
                            "G_bytes": sent["G"] - before["G"],
                            "D_bytes": sent["D"] - before["D"],
                            "frozen_with_grad": sum(p.grad is not None for p in frozen.parameters()),
                        }
                    )
    # after all steps the replicas must still be identical
    same = torch.tensor(
        [float(sum(p.detach().sum() for p in m.parameters())) for m in (nets.plain["G"], nets.plain["D"])]
    )
    gathered = acc.gather(same[None]).tolist()
    sg2 = stylegan2_rows(acc)
    if acc.is_main_process:
        numel = {n: sum(p.numel() for p in m.parameters()) for n, m in (("G", nets.plain["G"]), ("D", nets.plain["D"]))}
        Path(out).write_text(json.dumps({"rows": rows, "numel": numel, "replicas": gathered, "stylegan2": sg2}))


def stylegan2_rows(acc) -> dict:
    """Bytes all-reduced per StyleGAN2 phase over 2 steps (every phase due on step 0), accumulation 2."""
    model = {
        "family": "stylegan2",
        "z_dim": 8,
        "w_dim": 8,
        "mapping_layers": 2,
        "channel_base": 128,
        "channel_max": 8,
        "pl_every": 2,
        "style_mixing_prob": 0.5,
    }
    cfg = build_config(
        {"model": model, "data": {"path": "unused", "image_size": 16}, "loss": {"r1_gamma": 1, "r1_every": 2}}
    )
    family, nets, phases = build_training(acc, cfg, get_family("stylegan2")(cfg.model, DataSpec(16, 3)))
    sent = {"G": 0, "D": 0}
    for name in ("G", "D"):
        nets.ddp[name].register_comm_hook(None, _counting(sent, name))
    precision, rows, B = Precision("no", acc.device.type, tuple(nets.plain)), [], 4
    train_step = TrainStep(
        acc,
        precision,
        nets,
        phases,
        Recipe(r1_gamma=1, r1_every=2),
        family.z_dim,
        16,
        0,
        Layout(B, 2, acc.num_processes, acc.process_index),
    )
    for step in range(2):
        micro = [{"image": torch.rand(B, 3, 16, 16) * 2 - 1} for _ in range(2)]
        for index, phase in enumerate(phases):
            if step % phase.spec.interval:
                continue
            before = dict(sent)
            run_phase(acc, precision, nets, phase, micro, train_step.inputs(phase.spec, (0, step, index)))
            rows.append(
                {
                    "phase": phase.name,
                    "updates": phase.updates,
                    "G_bytes": sent["G"] - before["G"],
                    "D_bytes": sent["D"] - before["D"],
                }
            )
    state = torch.cat(
        [
            torch.stack([p.detach().sum() for p in nets.plain["G"].parameters()]),
            nets.plain["G"].mapping.w_avg,
            family.pl_mean.reshape(1),
        ]
    )
    numel = {n: sum(p.numel() for p in m.parameters()) for n, m in nets.plain.items()}
    return {"rows": rows, "numel": numel, "replicas": acc.gather(state[None]).tolist()}


def _counting(sent: dict, name: str):
    def hook(_state, bucket):
        sent[name] += bucket.buffer().numel() * bucket.buffer().element_size()
        return default_hooks.allreduce_hook(None, bucket)

    return hook


if __name__ == "__main__":
    main(sys.argv[1])
    exit_process(0)  # as the entry points end: interpreter teardown with gloo can abort (distgan.errors)
