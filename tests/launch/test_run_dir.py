"""The run directory under faults, through the real entry point: which checkpoint `latest` is after damage and
branches, what is never deleted, the exported generator, and --output-dir that cannot be written."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from distgan.train import checkpoint as ckpt
from tests.conftest import TEST_CONFIGS, assert_ok, run

TINY_GAN = str(TEST_CONFIGS / "tiny_gan.yaml")


def _train(out: Path, digits: Path, *args: str) -> subprocess.CompletedProcess:
    """`python launch/train.py` on tiny_gan (one process: its exit status is distgan's own)."""
    return run(
        [
            sys.executable,
            "launch/train.py",
            "--config",
            TINY_GAN,
            f"data.path={digits}",
            "--output-dir",
            str(out),
            *args,
        ]
    )


def _main(capsys, out: Path, digits: Path, *args: str) -> subprocess.CompletedProcess:
    """launch/train.py's main() in-process (the same entry point, without another interpreter start), for
    cases refused before training; the signal handlers it installs are put back."""
    from launch.train import main

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        status = main(["--config", TINY_GAN, f"data.path={digits}", "--output-dir", str(out), *args])
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess([], status, captured.out, captured.err)


def _one_error_line(result: subprocess.CompletedProcess, status: int = 2) -> str:
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits: Path) -> Path:
    """One tiny run (checkpoints at steps 2 and 4), copied by each test that needs one."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert_ok(_train(out, digits))
    return out


def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, symlinks=True)
    return to


def _resumed_from(result: subprocess.CompletedProcess) -> str:
    return result.stdout.split('"resume_from": "')[1].split('"')[0]


def test_latest_after_branches_and_damage(tmp_path: Path, digits: Path, trained: Path) -> None:
    out = _copy(trained, tmp_path / "run")  # checkpoints 2 and 4
    root = out / "checkpoints"
    # --resume PATH to an older step starts a new line: step 4 is moved aside, not resumed later, not deleted
    result = _train(out, digits, "--resume", str(root / "step_000000002"), "train.max_steps=3")
    assert_ok(result)
    assert "moved the later checkpoints step_000000004" in result.stdout
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_000000002", "step_000000003"]
    # a damaged head with checkpoint.keep=1: resumed from the good one, which is pruned only after the new
    # checkpoint is in place; the damaged one is moved aside
    weights = root / "step_000000003" / "D.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = _train(out, digits, "--resume", "latest", "checkpoint.keep=1", "train.max_steps=3")
    assert_ok(result)
    assert "skipping damaged checkpoint" in result.stdout and _resumed_from(result) == str(root / "step_000000002")
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_000000003"] and ckpt.read_latest(
        root
    ) == "step_000000003"
    ckpt.verify(root / "step_000000003")
    assert sorted(p.name for p in root.glob("abandoned/*/step_*")) == ["step_000000003", "step_000000004"]
    # nothing left to train, generator gone (as if killed mid-export): re-exported from the head
    (out / "generator").unlink()
    result = _train(out, digits, "--resume", "latest", "train.max_steps=3")
    assert_ok(result)
    assert _resumed_from(result) == str(root / "step_000000003")
    assert f"re-exported {out / 'generator'} from step_000000003" in result.stdout
    assert ckpt.exported_step(out / "generator") == 3


def test_every_checkpoint_damaged_is_refused_and_nothing_is_touched(
    tmp_path: Path, digits: Path, trained: Path, capsys
) -> None:
    out = _copy(trained, tmp_path / "run")
    for folder in ckpt.list_checkpoints(out / "checkpoints"):
        (folder / "state.json").write_text("{}")
    (out / "checkpoints" / "step_000000001").mkdir()  # no manifest: skipped, with a note
    before = _snapshot(out)
    line = _one_error_line(_main(capsys, out, digits, "--resume", "latest", "train.max_steps=6"))
    assert "--resume latest: no checkpoint in" in line and "no manifest.json" in line
    assert _snapshot(out) == before


def test_output_dir_that_is_a_file_or_under_one(tmp_path: Path, digits: Path, capsys) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    line = _one_error_line(_main(capsys, a_file, digits))
    assert f"--output-dir {a_file}: is a file" in line
    line = _one_error_line(_main(capsys, a_file / "run", digits))
    assert f"cannot be created, {a_file} is a file" in line
    assert a_file.read_text() == "mine"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs: a real full disk and a real read-only mount (root ignores permission bits, not `ro`)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_and_read_only_disk(small_disk: Path, digits: Path, trained: Path) -> None:
    out = _copy(trained, small_disk / "run")
    before = {k: v for k, v in _snapshot(out).items() if k != "config.yaml"}  # config.yaml: rewritten each start
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * (free - 150_000))  # room for part of the next checkpoint
    line = _one_error_line(_train(out, digits, "--resume", "latest", "train.max_steps=6"))
    assert "No space left on device" in line and "what was written before is untouched" in line
    root = out / "checkpoints"
    assert ckpt.read_latest(root) == "step_000000004" and not list(root.glob(".tmp-*"))
    ckpt.verify(root / "step_000000004")
    assert ckpt.exported_step(out / "generator") == 4
    assert {k: v for k, v in _snapshot(out).items() if k in before} == before
    (small_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    line = _one_error_line(_train(out, digits, "--resume", "latest", "train.max_steps=6"))
    assert f"--output-dir {out}: cannot write in {out} (Read-only file system)" in line
