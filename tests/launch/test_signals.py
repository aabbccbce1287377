"""Stop signals sent to the launcher, as SLURM and a terminal send them: no training process outlives
`accelerate launch`, each stop writes a checkpoint, and --resume latest continues from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from distgan.train import checkpoint as ckpt
from tests.conftest import REPO, TEST_CONFIGS, assert_ok, launch_command, launch_train

TINY_GAN = str(TEST_CONFIGS / "tiny_gan.yaml")
ENDLESS = [
    "data.cache_mb=0",
    "train.max_steps=100000",
    "checkpoint.every=2",
    "train.control_every=2",
    "log.every=100000",
]


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def _training_processes(launcher: subprocess.Popen, n: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [c for c in psutil.Process(launcher.pid).children() if "launch/train.py" in " ".join(c.cmdline())]
        if len(found) == n:
            return found
        time.sleep(0.2)
    raise AssertionError("training processes not found")


def _kill_group(pgid: int) -> None:
    """Clean up whatever a failed test left running."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _step(out: Path) -> int:
    latest = out / "checkpoints" / ckpt.read_latest(out / "checkpoints")
    ckpt.verify(latest)
    return json.loads((latest / "state.json").read_text())["step"]


@pytest.mark.parametrize(
    "sig, to_group",
    [(signal.SIGUSR1, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGUSR1 to the launcher", "SIGTERM to the launcher", "Ctrl-C (SIGINT to the process group)"],
)
def test_a_stop_signal_to_the_launcher_ends_every_process_after_a_checkpoint(
    tmp_path: Path, digits: Path, sig: signal.Signals, to_group: bool
) -> None:
    out = tmp_path / "run"
    args = ["--config", TINY_GAN, f"data.path={digits}", "--output-dir", str(out), *ENDLESS]
    cmd = launch_command("launch/train.py", args, nproc=2)
    # a session of its own: the group is what a terminal's Ctrl-C reaches (launcher, trainers, data workers)
    launcher = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
    try:
        _wait_for(out / "checkpoints" / "latest")
        trainers = _training_processes(launcher, 2)
        first = _step(out)
        os.killpg(launcher.pid, sig) if to_group else launcher.send_signal(sig)
        stdout, stderr = launcher.communicate(timeout=120)  # EOF: every process holding the pipes has ended
        _, alive = psutil.wait_procs(trainers, timeout=60)
    finally:
        _kill_group(launcher.pid)
    assert not alive, f"training processes outlived the launcher: {alive}"
    assert "checkpoint written; resume with --resume latest" in stdout, stderr[-3000:]
    step = _step(out)
    assert step > first and step % 2 == 0
    if sig == signal.SIGUSR1:  # the launcher has no handler and dies; its trainers noticed and stopped
        assert launcher.returncode == -signal.SIGUSR1
        assert "stopped by" in stdout
        result = launch_train([*args[:-4], "--resume", "latest", f"train.max_steps={step + 2}"], nproc=2)
        assert_ok(result)
        assert _step(out) == step + 2


def test_a_second_ctrl_c_exits_at_once_without_a_checkpoint(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "launch/train.py", "--config", TINY_GAN, f"data.path={digits}", "--output-dir", str(out)]
    cmd += ["train.max_steps=100000", "checkpoint.every=2", "train.control_every=100000", "log.every=100000"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / "checkpoints" / "latest")
        proc.send_signal(signal.SIGINT)  # acted on at the next control check: far away here
        time.sleep(2.5)  # past the window in which a second SIGINT counts as the same Ctrl-C
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGINT and "second Ctrl-C: exiting now, without a checkpoint" in stderr
    _step(out)  # what was written before still verifies
