"""scripts/gpu_check.sh on a machine without a GPU: says so plainly and succeeds (CI never has a GPU)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from tests.conftest import REPO


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: gpu_check.sh would run for real")
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "GPU_CHECK_OUT": str(tmp_path / "out"), "HOME": str(tmp_path)}
    result = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "gpu_check: no CUDA GPU visible to .venv/bin/python (torch.cuda.is_available() is false): nothing to check here"
    )


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_it_is_shellcheck_clean() -> None:
    result = subprocess.run(["shellcheck", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
