"""`launch/train.py` with configs that are valid YAML but would crash or do nothing: one error line, exit 2.

The many numeric cases are checked in-process (tests/test_config.py); these go through the real command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_CONFIGS, assert_ok, launch_train, run

TINY_DCGAN = str(TEST_CONFIGS / "tiny_dcgan.yaml")
NO_WANDB_LOGIN = {"WANDB_API_KEY": None, "WANDB_MODE": None, "NETRC": None}


def _binary_config(tmp_path: Path) -> str:
    path = tmp_path / "model.yaml"
    path.write_bytes(bytes(range(256)) * 8)
    return str(path)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train.max_seconds=nan"], "error: command-line override: train.max_seconds: must be a finite number"),
        (["train.betas=[0.5,"], "error: override 'train.betas=[0.5,': the value is not valid YAML"),
        (["trian.batch_size=3"], "error: command-line override: trian: unknown section (did you mean 'train'?)"),
        (["log.wandb=online"], "error: log.wandb: online W&B logging needs a login: run `wandb login`"),
        (["--config", "BINARY"], "error: --config "),
    ],
    ids=["nan", "override-yaml", "override-section", "wandb-online", "binary-config"],
)
def test_bad_config_is_one_line_before_anything_runs(
    tmp_path: Path, digits: Path, args: list[str], expected: str
) -> None:
    out = tmp_path / "run"
    config = _binary_config(tmp_path) if "BINARY" in args else TINY_DCGAN
    args = [a for a in args if a not in ("--config", "BINARY")]
    cmd = [sys.executable, "launch/train.py", "--config", config, "--output-dir", str(out), f"data.path={digits}"]
    env = {**NO_WANDB_LOGIN, "HOME": str(tmp_path)}  # no ~/.netrc: not logged in to W&B
    result = run([*cmd, *args], timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert not out.exists()


def test_dry_run_of_a_large_model_allocates_nothing(tmp_path: Path, digits: Path) -> None:
    """image_size 1024 at the faces widths: 1.4e9 parameters (5.8 GB) counted on the meta device."""
    measure = "import resource, subprocess, sys; subprocess.run(sys.argv[1:]); "
    measure += "print('maxrss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    args = ["--config", "dcgan_faces", f"data.path={digits}", "data.image_size=1024", "--dry-run"]
    result = run([sys.executable, "-c", measure, sys.executable, "launch/train.py", *args], timeout=180)
    assert_ok(result)
    assert '"params_G": 728927104' in result.stdout
    assert int(result.stdout.split("maxrss_kb")[-1]) < 3 * 2**20  # KiB: well under the 5.8 GB the weights need


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.ngf=5000", r"^model: G and D have 1.69e\+10 parameters together \(at most 1e\+10 can be trained\)"),
        ("model.ngf=1000000000000", r"^model: the networks' sizes overflow \(Storage size calculation overflowed"),
    ],
)
def test_untrainable_model_size_is_refused_before_allocating(
    tmp_path: Path, digits: Path, override: str, expected: str
) -> None:
    from distgan.config import load_config
    from distgan.errors import ConfigError
    from distgan.train.loop import prepare
    from launch.train import describe_unallocated

    prepared = prepare(load_config("dcgan_faces", [f"data.path={digits}", override]), tmp_path / "run", None)
    with pytest.raises(ConfigError, match=expected):
        describe_unallocated(prepared, 1)


def test_two_process_run_prints_no_warnings(tmp_path: Path, digits: Path) -> None:
    """A newcomer's first run is quiet: no deprecation notices (DDP's broadcast_buffers) or other warnings."""
    args = ["--config", TINY_DCGAN, "--output-dir", str(tmp_path / "run"), f"data.path={digits}"]
    result = launch_train([*args, "train.max_steps=2", "log.progress=true"], nproc=2)
    assert_ok(result)
    assert "Warning" not in result.stderr + result.stdout, result.stderr
