"""Real 2-process gloo DDP through `accelerate launch --multi_gpu` on CPU: traffic and equivalence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import TEST_CONFIGS, assert_ok, launch_command, run


def test_each_phase_all_reduces_exactly_one_copy_of_its_network(tmp_path: Path) -> None:
    out = tmp_path / "traffic.json"
    assert_ok(run(launch_command("tests/train/ddp_traffic.py", [str(out)], nproc=2)))
    result = json.loads(out.read_text())
    fp32 = 4
    for row in result["rows"]:  # every recipe and accumulation: one all-reduce per optimiser step
        updated, frozen = row["phase"], "G" if row["phase"] == "D" else "D"
        assert row[f"{updated}_bytes"] == fp32 * result["numel"][updated], row
        assert row[f"{frozen}_bytes"] == 0, row
        assert row["frozen_with_grad"] == 0, row
    assert len(result["rows"]) == 3 * 2 * 2 * 2  # recipes x accumulation x steps x phases
    d_rows = {(r["recipe"], r["accum"], i % 2): r["penalties"] for i, r in enumerate(result["rows"][::2])}
    assert d_rows[("lazy_r1", 1, 0)] == ["r1"] and d_rows[("lazy_r1", 1, 1)] == []  # R1 on every 2nd D step
    assert d_rows[("gp_diffaugment", 2, 0)] == d_rows[("gp_diffaugment", 2, 1)] == ["gp"]
    assert result["replicas"][0] == result["replicas"][1], "ranks diverged"
    sg2 = result["stylegan2"]  # Greg and Dreg are double backwards through DDP; Dmain runs G frozen
    assert [r["phase"] for r in sg2["rows"]] == ["Gmain", "Greg", "Dmain", "Dreg", "Gmain", "Dmain"]
    for row in sg2["rows"]:
        other = "D" if row["updates"] == "G" else "G"
        assert row[f"{row['updates']}_bytes"] == fp32 * sg2["numel"][row["updates"]], row
        assert row[f"{other}_bytes"] == 0, row
    assert sg2["replicas"][0] == sg2["replicas"][1], "ranks diverged (weights, w_avg or the path-length mean)"


EXITING = """
import atexit, os, sys
sys.path.insert(0, os.getcwd())
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from distgan.config import build_config
from distgan.errors import exit_process
from distgan.train.setup import make_accelerator

def report():  # registered first, so it runs after distgan's exit hook (atexit is last in, first out)
    open(sys.argv[1] + os.environ["RANK"], "w").write(str(dist.is_initialized()))

atexit.register(report)
acc = make_accelerator(build_config({"model": {"family": "dcgan"}, "data": {"path": "unused"}}), sys.argv[1], None)
net = acc.prepare(torch.nn.Linear(4, 4))
net.register_comm_hook(None, default_hooks.allreduce_hook)  # Python futures: what made teardown abort
for _ in range(3):
    net(torch.randn(2, 4)).sum().backward()
exit_process(int(sys.argv[2]))  # as launch/train.py ends; neither end_training nor destroy_process_group first
"""


@pytest.mark.parametrize("status", [0, 2])
def test_exit_destroys_the_process_group_and_keeps_the_status(tmp_path: Path, status: int) -> None:
    """A gloo group left to interpreter teardown aborted with SIGABRT ("terminate called without an active
    exception"), turning a finished run or an `error:` exit into a crash: with DDP alive at exit, 2 of 8 exits,
    3 of 30 after destroying the group at exit. Here the worst case through the exit the entry points take."""
    script = tmp_path / "exiting.py"
    script.write_text(EXITING)
    result = run(launch_command(str(script), [str(tmp_path / "initialized_at_exit_rank"), str(status)], nproc=2))
    assert "terminate called" not in result.stderr
    reports = [p.read_text() for p in sorted(tmp_path.glob("initialized_at_exit_rank*"))]
    if status == 0:
        assert_ok(result)
        assert reports == ["False", "False"]  # every rank closed its group before the interpreter's teardown
    else:  # the first rank to exit with 2 is what torch's launcher reports; it may SIGTERM the other one
        assert "exitcode  : 2" in result.stderr and "SIGABRT" not in result.stderr, result.stderr[-3000:]
        assert reports and set(reports) == {"False"}


# every recipe piece whose randomness or gradients could differ between ranks or micro-batches: lazy R1 (a
# double backward through DDP), GP (per-sample interpolation weights), 2 D steps (each on its own batches) and
# DiffAugment (per-sample parameters); spectral norm is left out, its power iteration runs once per forward
RECIPE = ["loss.r1_gamma=1", "loss.r1_every=2", "loss.gp_lambda=1", "train.d_steps=2"]
RECIPE += ["augment.diffaugment=color,translation,cutout"]


def _train(out: Path, data: Path, nproc: int, batch: int, accum: int) -> dict[str, torch.Tensor]:
    from tests.conftest import launch_train

    args = ["--config", str(TEST_CONFIGS / "tiny_dcgan.yaml"), "--output-dir", str(out), f"data.path={data}"]
    args += ["model.norm=none", f"train.batch_size={batch}", f"train.grad_accum={accum}", "train.max_steps=5"]
    args += [*RECIPE]
    args += ["checkpoint.every=100", "log.sample_every=100"]
    assert_ok(launch_train(args, nproc=nproc))
    final = out / "checkpoints" / "step_000000005"
    return {f"G.{k}": v for k, v in load_file(final / "G.safetensors").items()} | {
        f"D.{k}": v for k, v in load_file(final / "D.safetensors").items()
    }


def test_one_process_equals_two_processes_and_accumulation(tmp_path: Path, digits_one_shard: Path) -> None:
    """Same global batch of the same (shuffled, streamed) data with every recipe piece on (RECIPE): 1x8, 2x4,
    1x(4x2 accum), 2x(2x2 accum)."""
    reference = _train(tmp_path / "a", digits_one_shard, nproc=1, batch=8, accum=1)
    variants = {
        "2 processes x 4": _train(tmp_path / "b", digits_one_shard, nproc=2, batch=4, accum=1),
        "1 process x 4 x 2 accum": _train(tmp_path / "c", digits_one_shard, nproc=1, batch=4, accum=2),
        "2 processes x 2 x 2 accum": _train(tmp_path / "d", digits_one_shard, nproc=2, batch=2, accum=2),
    }
    from distgan.models.dcgan import DCGenerator

    torch.manual_seed(0)
    init = {f"G.{k}": v for k, v in DCGenerator(16, 8, 1, 16, "none").state_dict().items()}
    moved = max((reference[k] - init[k]).abs().max().item() for k in init)
    assert moved > 1e-4, "training did not change the weights: the comparison would be vacuous"
    for name, weights in variants.items():
        worst = max((reference[k] - weights[k]).abs().max().item() for k in reference)
        print(f"{name}: max |w - w_ref| = {worst:.2e} (weights moved up to {moved:.2e})")
        assert worst < 2e-5, f"{name}: weights differ from 1 process x 8 by {worst:.2e}"


def test_stylegan2_one_process_equals_two(tmp_path: Path, digits_one_shard: Path) -> None:
    """StyleGAN2's four phases with style mixing, per-layer noise and the path-length mean: its random inputs
    are drawn for the global batch and its running means (w_avg, pl_mean) taken over all processes, so 1 x 8
    and 2 x 4 train the same weights and keep the same state. (Minibatch std groups form inside each
    process's batch, as in the official code: sample i of a batch of B joins group i mod B/group_size. With
    group 4 the groups of 1 x 8 are the two ranks' samples of 2 x 4, so the runs can be equal.)"""
    from tests.conftest import launch_train

    finals = []
    for name, nproc, batch in (("a", 1, 8), ("b", 2, 4)):
        args = ["--config", str(TEST_CONFIGS / "tiny_stylegan2.yaml"), "--output-dir", str(tmp_path / name)]
        args += [f"data.path={digits_one_shard}", f"train.batch_size={batch}", "checkpoint.every=100"]
        args += ["log.sample_every=100", "model.pl_batch_shrink=2", "model.mbstd_group_size=4"]
        result = launch_train(args, nproc=nproc)
        assert_ok(result)
        assert "Warning" not in result.stderr, result.stderr  # quiet, as the dcgan run (test_train_config.py)
        final = tmp_path / name / "checkpoints" / "step_000000004"
        finals.append(
            {
                f"{f}.{k}": v
                for f in ("G", "D", "G_ema", "family_state")
                for k, v in load_file(final / f"{f}.safetensors").items()
            }
        )
    one, two = finals
    assert one["family_state.pl_mean"] > 0  # Greg ran and moved the path-length mean
    from accelerate.utils import set_seed

    from distgan.config import load_config
    from distgan.family import DataSpec
    from distgan.registry import get_family

    cfg = load_config(TEST_CONFIGS / "tiny_stylegan2.yaml", [])
    set_seed(0)  # as build_training draws the initial weights
    init = get_family("stylegan2")(cfg.model, DataSpec(16, 1)).build_networks()["G"].state_dict()
    moved = max((one[f"G.{k}"] - v).abs().max().item() for k, v in init.items())
    worst = max((one[k].double() - two[k].double()).abs().max().item() for k in one)
    print(f"max |w_2proc - w_1proc| = {worst:.2e}, weights moved up to {moved:.2e}")
    assert moved > 1e-3, "training did not change the weights: the comparison would be vacuous"
    assert worst < 2e-5, f"2 processes x 4 differ from 1 process x 8 by {worst:.2e}"
