"""Fault tolerance as users meet it: exact resume, signals, damaged checkpoints, dead peers, divergence."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from distgan.errors import EXIT_DIVERGED, EXIT_PREEMPTED
from distgan.train.checkpoint import list_checkpoints, load_tree, read_latest
from tests.conftest import REPO, TEST_CONFIGS, assert_ok, launch_command, launch_train, run
from tests.wandb_offline import read_offline_run

TINY_DCGAN = str(TEST_CONFIGS / "tiny_dcgan.yaml")
TINY_GAN = str(TEST_CONFIGS / "tiny_gan.yaml")
ALL_RECIPES = ["loss.adversarial=hinge", "loss.r1_gamma=1", "loss.r1_every=3", "loss.gp_lambda=1", "train.d_steps=2"]
ALL_RECIPES += ["augment.diffaugment=color,translation,cutout", "train.spectral_norm=both"]


def _final_state(out: Path, step: int) -> dict[str, torch.Tensor]:
    folder = out / "checkpoints" / f"step_{step:09d}"
    tensors = {f"G.{k}": v for k, v in load_file(folder / "G.safetensors").items()}
    tensors |= {f"D.{k}": v for k, v in load_file(folder / "D.safetensors").items()}
    tensors |= {f"G_ema.{k}": v for k, v in load_file(folder / "G_ema.safetensors").items()}  # EMA is on by default
    for extra in ("family_state", "ada"):  # running state beside the networks, when the run keeps it
        if (folder / f"{extra}.safetensors").is_file():
            tensors |= {f"{extra}.{k}": v for k, v in load_file(folder / f"{extra}.safetensors").items()}
    for net in ("G", "D"):
        for index, slots in load_tree(folder, f"opt_{net}")["state"].items():
            tensors |= {f"opt_{net}.{index}.{k}": v for k, v in slots.items()}
    return tensors


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize(
    "config, nproc, extra",
    [
        # MLP with dropout (the RNG state must be restored) and every recipe piece, fp16: the lazy-R1 counter
        # falls mid-cycle at the resume, spectral norm's u, v and the fp16 scales must continue exactly
        (TINY_GAN, 1, [*ALL_RECIPES, "train.mixed_precision=fp16"]),
        (TINY_DCGAN, 2, ["data.load_size=20", "data.random_flip=true", "log.wandb=offline"]),  # BN, crops, flips
        # StyleGAN2's lazy phases (Greg, Dreg every 2nd step), path-length mean, w_avg and ADA's p and r_t sums
        (
            str(TEST_CONFIGS / "tiny_stylegan2.yaml"),
            1,
            ["augment.ada=true", "augment.ada_p=0.5", "augment.ada_interval=3"],
        ),
    ],
    ids=["1 process gan every recipe fp16", "2 processes dcgan", "1 process stylegan2 ada"],
)
def test_interrupted_and_resumed_equals_uninterrupted_bitwise(tmp_path: Path, digits: Path, config, nproc, extra):
    base = ["--config", config, f"data.path={digits}", "checkpoint.every=4", "log.every=2", *extra]
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert_ok(launch_train([*base, "--output-dir", str(straight), "train.max_steps=8"], nproc=nproc))
    if "log.wandb=offline" in extra:  # a run that ended at step 4 (its W&B run continues below)
        assert_ok(launch_train([*base, "--output-dir", str(halves), "train.max_steps=4"], nproc=nproc))
    else:  # the straight run as a preempted job leaves it: its mid-run checkpoint of step 4 is the newest
        shutil.copytree(straight, halves, symlinks=True)
        shutil.rmtree(halves / "checkpoints" / "step_000000008")
        (halves / "checkpoints" / "latest").write_text("step_000000004\n")
    result = launch_train([*base, "--output-dir", str(halves), "train.max_steps=8", "--resume", "latest"], nproc=nproc)
    assert_ok(result)
    assert "step_000000004" in result.stdout
    _assert_bitwise_equal(_final_state(straight, 8), _final_state(halves, 8))
    if "log.wandb=offline" in extra:  # W&B continues the same run, steps monotonic
        runs = sorted((halves / "wandb").glob("offline-run-*"))
        assert len(runs) == 2 and len({r.name.split("-")[-1] for r in runs}) == 1, runs
        steps = [row["_step"] for r in runs for row in read_offline_run(str(r), wait_s=10)["history"]]
        assert steps == sorted(steps) and [s for s in steps if s % 2 == 0 and s > 0] == [2, 4, 6, 8]


@pytest.fixture(scope="module")
def trained_gan(tmp_path_factory, digits: Path) -> Path:
    """A finished tiny_gan run (checkpoints at steps 2 and 4), trained once for the tests that damage a copy."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert_ok(launch_train(["--config", TINY_GAN, f"data.path={digits}", "--output-dir", str(out)]))
    return out


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of a run directory (its generator link is relative, so the copy stands alone)."""
    out = tmp_path / "run"
    shutil.copytree(run_dir, out, symlinks=True)
    return out


def test_checkpoints_never_unpickle(tmp_path: Path, digits: Path, trained_gan: Path) -> None:
    out = _copy_run(trained_gan, tmp_path)
    base = ["--config", TINY_GAN, f"data.path={digits}", "--output-dir", str(out)]
    folder = out / "checkpoints" / "step_000000004"
    for f in folder.iterdir():  # nothing written is a pickle (protocol 2+ starts with 0x80)
        assert f.suffix in (".safetensors", ".json", ".yaml") and not f.read_bytes().startswith(b"\x80"), f
    sentinel = tmp_path / "UNPICKLED"
    payload = pickle.dumps(_Boom(str(sentinel)))
    for name in ("optimizer.bin", "random_states_0.pkl", "scaler.pt", "pytorch_model.bin", "rank_0.pkl"):
        (folder / name).write_bytes(payload)  # where Accelerate's save_state / torch.load would look
    assert_ok(launch_train([*base, "--resume", "latest", "train.max_steps=6"]))
    assert not sentinel.exists(), "a pickle in the checkpoint was loaded"


class _Boom:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_damaged_latest_falls_back_and_mismatched_config_is_refused(
    tmp_path: Path, digits: Path, trained_gan: Path
) -> None:
    out = _copy_run(trained_gan, tmp_path)  # checkpoints at steps 2 and 4
    base = ["--config", TINY_GAN, f"data.path={digits}", "--output-dir", str(out)]
    weights = out / "checkpoints" / "step_000000004" / "D.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a torn write
    result = launch_train([*base, "--resume", "latest", "train.max_steps=6"])
    assert_ok(result)
    assert "skipping damaged checkpoint" in result.stdout and "D.safetensors: truncated" in result.stdout
    assert '"resume_from": "' + str(out / "checkpoints" / "step_000000002") in result.stdout
    mismatch = run([sys.executable, "launch/train.py", *base, "--resume", "latest", "model.hidden=64"])
    assert mismatch.returncode == 2
    assert "saved with model.hidden=32, but this run has model.hidden=64" in mismatch.stderr
    assert len(mismatch.stderr.strip().splitlines()) == 1


def test_resume_on_fewer_processes_keeps_the_global_batch(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "run"
    base = ["--config", TINY_GAN, f"data.path={digits}", "--output-dir", str(out), "train.batch_size=4"]
    assert_ok(launch_train(base, nproc=2))  # global batch 8
    result = launch_train([*base, "--resume", "latest", "train.max_steps=6"], nproc=1)
    assert_ok(result)
    assert "train.grad_accum=2 keeps the global batch of 8" in result.stdout
    state = json.loads((out / "checkpoints" / "step_000000006" / "state.json").read_text())
    assert state["global_batch"] == 8 and state["images_seen"] == 6 * 8
    # 3 processes x 4 cannot make 8: refused before any process group (WORLD_SIZE is what the launcher sets)
    odd = run([sys.executable, "launch/train.py", *base, "--resume", "latest"], env={"WORLD_SIZE": "3"})
    assert odd.returncode == 2 and "no whole train.grad_accum keeps it" in odd.stderr


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def _workers(launcher: subprocess.Popen) -> dict[int, psutil.Process]:
    """rank -> training process under `accelerate launch`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = {}
        for child in psutil.Process(launcher.pid).children(recursive=False):  # not their DataLoader workers
            try:
                if "launch/train.py" in " ".join(child.cmdline()) and "RANK" in child.environ():
                    found[int(child.environ()["RANK"])] = child
            except psutil.Error:
                continue
        if len(found) == 2:
            return found
        time.sleep(0.2)
    raise AssertionError("training processes not found")


def _train_cmd(out: Path, digits: Path, *overrides: str) -> list[str]:
    """`python launch/train.py` (one process, no launcher: its exit status is distgan's own) on tiny_gan."""
    return [
        sys.executable,
        "launch/train.py",
        "--config",
        TINY_GAN,
        f"data.path={digits}",
        "--output-dir",
        str(out),
        *overrides,
    ]


def _popen_launch(args: list[str]) -> subprocess.Popen:
    cmd = launch_command("launch/train.py", args, nproc=2)
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)


def test_sigusr1_to_one_rank_stops_all_with_a_checkpoint_then_resume(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "run"
    base = ["--config", TINY_GAN, f"data.path={digits}", "--output-dir", str(out), "train.max_steps=100000"]
    base += ["checkpoint.every=2", "checkpoint.keep=1", "train.control_every=2", "log.every=100000"]
    launcher = _popen_launch(base)
    try:
        _wait_for(out / "checkpoints" / "latest")
        _workers(launcher)[1].send_signal(signal.SIGUSR1)  # only rank 1 is told: rank 0 learns at the check
        stdout, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert "stopped by" in stdout and "checkpoint written; resume with --resume latest" in stdout, stderr[-3000:]
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    step = json.loads((latest / "state.json").read_text())["step"]
    assert 0 < step < 100000 and step % 2 == 0
    assert {p.name for p in latest.glob("rank_*.json")} == {"rank_0.json", "rank_1.json"}
    result = launch_train([*base, "--resume", "latest", f"train.max_steps={step + 4}"], nproc=2)
    assert_ok(result)
    assert json.loads((out / "checkpoints" / f"step_{step + 4:09d}" / "state.json").read_text())["step"] == step + 4


def test_sigterm_single_process_exits_3_after_checkpoint(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "run"
    cmd = _train_cmd(
        out, digits, "train.max_steps=100000", "checkpoint.every=2", "train.control_every=2", "log.every=100000"
    )
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / "checkpoints" / "latest")
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_PREEMPTED
    assert "stopped by SIGTERM at step" in stdout


def test_a_dead_rank_ends_the_job_instead_of_hanging(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "run"
    args = ["--config", TINY_GAN, f"data.path={digits}", "--output-dir", str(out), "train.max_steps=100000"]
    args += ["checkpoint.every=2", "log.every=100000", "train.collective_timeout_s=20"]
    launcher = _popen_launch(args)
    try:
        _wait_for(out / "checkpoints" / "latest")
        start = time.monotonic()
        _workers(launcher)[1].kill()  # SIGKILL: no goodbye
        _, stderr = launcher.communicate(timeout=90)
    finally:
        launcher.kill()
    assert launcher.returncode != 0 and time.monotonic() - start < 60
    assert "exitcode  : -9" in stderr or "another process failed" in stderr


def test_divergence_names_a_good_checkpoint_and_lower_learning_rates_apply(tmp_path: Path, digits: Path) -> None:
    out, root = tmp_path / "run", tmp_path / "run" / "checkpoints"
    assert_ok(run(_train_cmd(out, digits, "train.max_steps=2")))  # a good checkpoint at step 2
    cmd = _train_cmd(
        out,
        digits,
        "--resume",
        "latest",
        "train.max_steps=200",
        "train.lr_d=1",
        "train.lr_g=1",
        "train.mixed_precision=fp16",
    )
    cmd += ["train.max_nonfinite=3", "train.control_every=1", "checkpoint.every=1", "checkpoint.keep=1"]
    result = run(cmd)
    assert result.returncode == EXIT_DIVERGED, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: step ") and "3 steps in a row had non-finite" in line
    assert f"last good checkpoint: {root / 'step_000000002'};" in line  # not one saved inside the streak
    assert [p.name for p in list_checkpoints(root)] == ["step_000000002"] and read_latest(root) == "step_000000002"
    assert len(list(root.glob("abandoned/*/step_*"))) >= 1  # the streak's checkpoints: set aside, not deleted
    lower = ["train.lr_d=1e-5", "train.lr_g=1e-5", "train.betas=[0.0,0.99]"]
    result = run(_train_cmd(out, digits, "--resume", "latest", "train.max_steps=3", *lower))
    assert_ok(result)
    assert _resumed(result) == str(root / "step_000000002")
    assert (
        "resuming with train.lr_d=1e-05 (checkpoint: 0.0002), train.lr_g=1e-05 (checkpoint: 0.0002), "
        "train.betas=[0.0, 0.99] (checkpoint: [0.5, 0.999]): applied to the optimisers" in result.stdout
    )
    for net in ("G", "D"):  # what the optimiser used is what config.yaml records
        group = load_tree(root / "step_000000003", f"opt_{net}")["param_groups"][0]
        assert group["lr"] == 1e-5 and tuple(group["betas"]) == (0.0, 0.99)


def _resumed(result: subprocess.CompletedProcess) -> str:
    return result.stdout.split('"resume_from": "')[1].split('"')[0]


def test_a_signal_during_start_up_is_not_fatal(tmp_path: Path, digits: Path) -> None:
    """SLURM may preempt while the job is still importing torch or opening data: the handlers come first."""
    out = tmp_path / "run"
    cmd = _train_cmd(out, digits, "train.max_steps=100000", "checkpoint.every=100000", "train.control_every=2")
    cmd += ["log.every=100000"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # inside the imports, long before the first step
        assert proc.poll() is None
        proc.send_signal(signal.SIGUSR1)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, stderr[-2000:]
    assert "stopped by SIGUSR1 at step 2" in stdout
    assert json.loads((out / "checkpoints" / "step_000000002" / "state.json").read_text())["step"] == 2
