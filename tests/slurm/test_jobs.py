"""scripts/slurm/ job scripts submitted to a real SLURM cluster (tests/slurm/conftest.py) as users submit them.

Each job trains tests/configs/tiny_gan.yaml on the real digits with real gloo DDP. Stopping is done the
ways clusters do it: the time-limit warning (`--signal=B:USR1@T` signals only the batch shell, which is
what `scancel --batch --signal=USR1` does) and partition preemption (SIGTERM to every process of the
steps, then requeue); each time the training must checkpoint, the job requeue itself and the next start
resume and finish at exactly train.max_steps.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_CONFIGS
from tests.slurm.conftest import Slurm, apt_install

SINGLE = "scripts/slurm/single_node.sbatch"
MULTI = "scripts/slurm/multi_node.sbatch"
TINY_GAN = str(TEST_CONFIGS / "tiny_gan.yaml")
BATCH = 8  # tiny_gan's train.batch_size


def submit_training(
    slurm: Slurm,
    script: str,
    out: Path,
    digits: Path,
    overrides: list[str],
    procs_per_node: int,
    options: tuple[str, ...] = (),
) -> tuple[int, Path]:
    """Submit SCRIPT with the knobs a user sets (CONFIG, OUTPUT_DIR, PROCS_PER_NODE, OVERRIDES + arguments)."""
    log = out.parent / f"{out.name}.log"
    env = {
        "CONFIG": TINY_GAN,
        "OUTPUT_DIR": str(out),
        "PROCS_PER_NODE": str(procs_per_node),
        "OVERRIDES": f"data.path={digits}",  # tiny_gan: log.wandb off
        "PYTHON": sys.executable,
        "DISTGAN_ROOT": str(REPO),
    }
    job = slurm.submit(script, *overrides, options=(f"--output={log}", *options), env=env)
    return job, log


def read_log(log: Path) -> str:
    return log.read_text(errors="replace").replace("\r", "\n") if log.exists() else ""


def state(out: Path, step: int) -> dict:
    return json.loads((out / "checkpoints" / f"step_{step:09d}" / "state.json").read_text())


def checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


def wait_for_progress(slurm: Slurm, job: int, out: Path, log: Path, after: int = -1) -> None:
    """Until the job runs and its training wrote a sample grid of a step > `after` (past start-up, mid-training)."""

    def training(info: dict[str, str]) -> bool:
        assert info["JobState"] not in ENDED, f"job ended early: {info}\n{slurm.diagnose(log)}"
        steps = [int(p.stem.split("_")[1]) for p in (out / "samples").glob("step_*.png")]
        return info["JobState"] == "RUNNING" and any(step > after for step in steps)

    slurm.wait_for(job, training, "running with progress", timeout=180, log=log)


def stops(log: Path) -> list[int]:
    """The steps at which a signal stopped the training with a checkpoint, in order."""
    return [int(s) for s in re.findall(r"distgan: stopped by SIG\w+ at step (\d+); checkpoint written", read_log(log))]


LONG = ["train.max_steps=400", "checkpoint.every=1000", "train.control_every=2", "log.sample_every=20"]


def test_time_limit_warning_and_preemption_checkpoint_requeue_and_resume(
    slurm: Slurm, digits: Path, tmp_path: Path
) -> None:
    """One job stopped both ways clusters stop jobs, requeued after each, finishing at exactly max_steps:
    first the time-limit warning (what `#SBATCH --signal=B:USR1@300` sends 5 minutes before the limit: USR1
    to the batch shell only), then partition preemption (a job of a higher-priority partition needs the node:
    SLURM sends SIGTERM to every process of the job's steps, not its batch shell, and requeues it)."""
    out = tmp_path / "run"
    job, log = submit_training(slurm, SINGLE, out, digits, LONG, procs_per_node=2)
    wait_for_progress(slurm, job, out, log)
    info = slurm.job(job)
    assert info["Requeue"] == "1" and info["TimeLimit"] == "04:00:00"  # the script's #SBATCH lines were read
    slurm.cmd("scancel", "--batch", "--signal=USR1", str(job))
    slurm.wait_for(job, lambda _: len(stops(log)) == 1, "stopped by the time-limit warning", timeout=120, log=log)
    wait_for_progress(slurm, job, out, log, after=stops(log)[0])  # requeued, resumed, training again
    urgent = slurm.submit(
        "--wrap=true", options=("--partition=urgent", f"--nodelist={slurm.job(job)['NodeList']}", "--exclusive",
                                "--output=/dev/null")
    )  # fmt: skip
    info = slurm.wait_finished(job, log=log)
    text = read_log(log)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{slurm.diagnose(log)}"
    assert info["Restarts"] == "2", f"requeued twice: {info}\n{text[-3000:]}"
    assert slurm.wait_finished(urgent)["JobState"] == "COMPLETED"
    # the first start: 2 gloo processes on one node, nothing to resume
    assert "on 2 x cpu" in text and '"global_batch": 16' in text, text[-3000:]
    assert "node 0/1" in text and "2 process(es), 0 GPU(s)" in text
    assert text.count('"resume_from": null') == 1  # --resume latest with nothing to resume: a fresh start
    # each stop: the signal seen, a checkpoint written mid-run, a requeue, the next start resuming from it
    assert "batch shell got SIGUSR1" in text and "node 0 got SIGTERM" in text, text[-3000:]
    first, second = stops(log)
    assert 0 < first < second < 400, text[-3000:]
    assert checkpoint_steps(out) == [second, 400]  # checkpoint.every=1000; keep 2: the first stop's is pruned
    assert state(out, second)["step"] == second
    assert text.count("requeueing job") == 2
    assert len(re.findall(r"distgan-slurm: job \d+ start \d", text)) == 3
    for step in (first, second):
        assert f'"resume_from": "{out}/checkpoints/step_{step:09d}"' in text, text[-3000:]
    final = state(out, 400)
    assert final["step"] == 400 and final["images_seen"] == 400 * BATCH * 2
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000000400"
    assert (out / "samples" / "step_000000400.png").exists()
    assert {"model.safetensors", "config.json"} <= {p.name for p in (out / "generator").iterdir()}


def test_two_nodes_one_process_each(slurm: Slurm, digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    job, log = submit_training(slurm, MULTI, out, digits, ["train.max_steps=4"], procs_per_node=1)
    info = slurm.wait_finished(job, log=log)
    text = read_log(log)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{slurm.diagnose(log)}"
    assert info["NodeList"] == "n[1-2]" and info["NumNodes"] == "2"
    # one `accelerate launch` per node, machine ranks 0 and 1, the main address from the allocation
    assert "on 2 node(s)" in text
    assert "node 0/2" in text and "node 1/2" in text and "main 127.0.0.1:" in text, text[-3000:]
    assert "on 2 x cpu" in text and '"processes": 2' in text, text[-3000:]
    assert state(out, 4)["step"] == 4 and state(out, 4)["images_seen"] == 4 * BATCH * 2
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000000004"


def test_job_scripts_are_shellcheck_clean() -> None:
    reason = apt_install(("shellcheck",), ("shellcheck",))
    if reason:
        pytest.skip(reason)
    scripts = sorted(str(p) for p in (REPO / "scripts" / "slurm").iterdir() if p.suffix in (".sh", ".sbatch"))
    result = subprocess.run(["shellcheck", "-s", "bash", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
