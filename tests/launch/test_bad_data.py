"""Errors while DataLoader workers are alive end the run promptly: the real entry points, 1 and 2 processes.

The workers ignore SIGTERM/SIGUSR1/SIGINT (SLURM signals the whole job step); these runs hung forever before
the training process killed them on its way out. Every run has a generous timeout: ending at all is the test.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, TEST_CONFIGS, assert_ok, launch_train, run
from tests.data.test_bad_data import good_pngs, labelled_parquet

TINY_DCGAN = str(TEST_CONFIGS / "tiny_dcgan.yaml")
TINY_CGAN = str(TEST_CONFIGS / "tiny_cgan.yaml")
TIMEOUT = 120  # seconds; a hang fails with subprocess.TimeoutExpired


def train_py(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return run([sys.executable, "launch/train.py", *args], timeout=timeout)


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def text_named_png(tmp_path: Path) -> Path:
    """The issue's case: good PNGs and one text file named x.png (last in file order)."""
    folder = good_pngs(tmp_path / "images", n=24)
    (folder / "x.png").write_text("not an image")
    return folder


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_undecodable_file_with_workers_ends_with_one_line(tmp_path: Path) -> None:
    folder = text_named_png(tmp_path)
    args = [
        "--config",
        TINY_DCGAN,
        f"data.path={folder}",
        "data.shuffle_buffer=0",
        "data.num_workers=2",
        "data.cache_mb=0",
    ]
    result = train_py(*args, "train.max_steps=20", "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line(result) == (
        f"error: data.path={folder}: file {folder / 'x.png'}, column 'image': not an image in an allowed format "
        "(PNG, JPEG, BMP, GIF, WEBP, TIFF); fix or remove it (a bad example stops the run)"
    )
    assert "Traceback" not in result.stderr


def test_bad_data_on_resume_without_workers_leaves_the_run_untouched(tmp_path: Path) -> None:
    folder = good_pngs(tmp_path / "images", n=24)
    out = tmp_path / "run"
    args = ["--config", TINY_DCGAN, f"data.path={folder}", "data.shuffle_buffer=0", "data.num_workers=0"]
    assert_ok(train_py(*args, "train.max_steps=2", "--output-dir", str(out)))
    before = {k: v for k, v in tree_digest(out).items() if k != "config.yaml"}  # a resume rewrites config.yaml
    (folder / "x.png").write_text("not an image")
    result = train_py(*args, "train.max_steps=20", "--output-dir", str(out), "--resume", "latest")
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line(result).startswith(f"error: data.path={folder}: file {folder / 'x.png'}, column 'image': ")
    assert {k: v for k, v in tree_digest(out).items() if k != "config.yaml"} == before


def test_two_processes_bad_parquet_row_read_by_a_worker_ends_the_job(tmp_path: Path) -> None:
    bad = labelled_parquet(tmp_path / "data")
    args = [
        "--config",
        TINY_CGAN,
        f"data.path={tmp_path / 'data'}",
        "data.shuffle_buffer=0",
        "data.num_workers=1",
        "data.cache_mb=0",
    ]
    result = launch_train(
        [*args, "train.max_steps=20", "--output-dir", str(tmp_path / "run")], nproc=2, timeout=TIMEOUT
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: data.path=")]
    assert errors == [
        f"error: data.path={tmp_path / 'data'}: parquet file {bad} row 5, column 'image': not an image in an "
        "allowed format (PNG, JPEG, BMP, GIF, WEBP, TIFF); fix or remove it (a bad example stops the run)"
    ]


# Fault injection: launch/train.py run as __main__ after replacing the step's phase function.
MEMORY_ERROR_AT_STEP_3 = """
import runpy, sys
import distgan.train.step as step
real, calls = step.run_phase, [0]
def run_phase(*args, **kwargs):
    calls[0] += 1
    if calls[0] > 4:  # two phases per step
        raise MemoryError()
    return real(*args, **kwargs)
step.run_phase = run_phase
sys.argv = ["launch/train.py", *sys.argv[1:]]
runpy.run_path("launch/train.py", run_name="__main__")
"""


def test_unexpected_error_in_the_step_with_workers_ends_with_one_line(tmp_path: Path) -> None:
    folder = good_pngs(tmp_path / "images", n=24)
    args = [
        "--config",
        TINY_DCGAN,
        f"data.path={folder}",
        "data.num_workers=2",
        "data.cache_mb=0",
        "train.max_steps=20",
    ]
    result = run([sys.executable, "-c", MEMORY_ERROR_AT_STEP_3, *args, "--output-dir", str(tmp_path / "run")], TIMEOUT)
    assert result.returncode == 1, result.stderr[-3000:]
    assert last_line(result) == "error: out of memory (MemoryError); lower train.batch_size or data.image_size"


def test_sigint_with_workers_alive_ends_the_process_and_its_workers(tmp_path: Path) -> None:
    """kill -INT reaches the training process alone (not a terminal's process group): whatever it then does
    (another test owns what Ctrl-C means), it must end, and its workers with it."""
    data = labelled_parquet(tmp_path / "data", bad_row=None).parent  # two shards: two workers per epoch's loader
    args = [
        "--config",
        TINY_DCGAN,
        f"data.path={data}",
        "data.num_workers=2",
        "data.cache_mb=0",
        "train.max_steps=100000",
    ]
    args += ["checkpoint.every=100000", "--output-dir", str(tmp_path / "run")]
    proc = subprocess.Popen([sys.executable, "launch/train.py", *args], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        workers: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(workers) >= 2, "the workers never started"
        time.sleep(1)  # the next epoch's loader starts its two after the first batch
        workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode != 0
    for pid in workers:  # gone, or a zombie waiting for a reaper: not running
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z", f"worker {pid} outlived the training process"


def test_hub_id_offline_and_not_cached_is_one_line(tmp_path: Path) -> None:
    """The issue's command (HF_DATASETS_OFFLINE: tests/data/test_bad_data.py)."""
    result = run(
        [sys.executable, "launch/train.py", "--config", "gan_mnist", "data.path=ylecun/mnist"]
        + ["--output-dir", str(tmp_path / "run")],
        timeout=TIMEOUT,
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": None, "HF_HOME": str(tmp_path / "hf")},  # empty cache
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip() == (
        "error: data.path=ylecun/mnist: no such local file or folder, and not in the local Hugging Face cache "
        "(HF_HUB_OFFLINE=1 forbids downloading it); download it where there is network (`huggingface-cli download "
        "--repo-type dataset ylecun/mnist --local-dir DIR`) and set data.path=DIR (parquet, imagefolder or a "
        "folder of images)"
    )
    assert not (tmp_path / "run").exists()
