"""Shared fixtures: real data written by the repo's own preparation script, and the real launcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_CONFIGS = Path(__file__).resolve().parent / "configs"


def run(cmd: list[str], timeout: float = 300, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """Run a command from the repo root, capturing output; env adds to os.environ (None removes a variable)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)


def launch_command(script: str, args: list[str], nproc: int = 1) -> list[str]:
    """`accelerate launch [--multi_gpu --num_processes N] SCRIPT ARGS`, as a user runs it, on a free port."""
    dist = ["--multi_gpu", "--num_processes", str(nproc)] if nproc > 1 else ["--num_processes", "1"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *dist, "--num_machines", "1", "--mixed_precision", "no"]
    return [*cmd, "--dynamo_backend", "no", "--main_process_port", str(_free_port()), script, *args]


def launch_train(args: list[str], nproc: int = 1, **kw) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes N launch/train.py ARGS` for N > 1, `python launch/train.py
    ARGS` for one process: both as users run them (the single-process launcher only adds a parent process,
    2.5 s of start-up; tests/launch/test_train.py runs it, as the README's first command does)."""
    if nproc == 1:
        return run([sys.executable, "launch/train.py", *args], **kw)
    return run(launch_command("launch/train.py", args, nproc), **kw)


def sample_py(*args: str) -> subprocess.CompletedProcess:
    """`python launch/sample.py ARGS`, as users run it."""
    return run([sys.executable, "launch/sample.py", *args], timeout=120)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_digits(out: Path, shards: int) -> Path:
    result = run([sys.executable, "scripts/prepare_digits.py", "--out", str(out), "--shards", str(shards)])
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """scikit-learn's real digits as 4 parquet shards (the demo's data)."""
    return _prepare_digits(tmp_path_factory.mktemp("digits"), 4)


@pytest.fixture(scope="session")
def digits_one_shard(tmp_path_factory) -> Path:
    """The same digits in one shard: ranks then split example by example (every other example)."""
    return _prepare_digits(tmp_path_factory.mktemp("digits1"), 1)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"
    )


SG2_REFERENCE = REPO.parent / "shared" / "stylegan2"  # the official networks' outputs (outside the repo)
needs_sg2_reference = pytest.mark.skipif(
    not (SG2_REFERENCE / "small_uncond" / "config.json").is_file(),
    reason=f"no StyleGAN2 reference data at {SG2_REFERENCE}",
)
