"""`launch/train.py` as users run it: outputs on disk, W&B offline files, resume, time budget, errors."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from distgan.train.checkpoint import load_tree
from launch.sample import main as sample_main
from tests.conftest import TEST_CONFIGS, assert_ok, launch_command, launch_train, run
from tests.wandb_offline import read_offline_run

TINY_DCGAN = str(TEST_CONFIGS / "tiny_dcgan.yaml")
TINY_GAN = str(TEST_CONFIGS / "tiny_gan.yaml")


def test_two_process_dcgan_with_batchnorm_logs_to_wandb_offline(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "run"
    args = ["--config", TINY_DCGAN, "--output-dir", str(out), f"data.path={digits}", "log.wandb=auto"]
    result = launch_train(args, nproc=2, env={"WANDB_API_KEY": None, "WANDB_MODE": None})
    assert_ok(result)
    assert "on 2 x cpu" in result.stdout and '"global_batch": 16' in result.stdout
    # run directory layout
    assert (out / "config.yaml").read_text().startswith("model:")
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step_000000002.png", "step_000000004.png"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000000004"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_000000002", "step_000000004"]
    assert {"model.safetensors", "config.json"} <= {p.name for p in (out / "generator").iterdir()}
    state = json.loads((out / "checkpoints" / "step_000000004" / "state.json").read_text())
    assert state["step"] == 4 and state["images_seen"] == 4 * 8 * 2
    assert {p.name for p in (out / "checkpoints" / "step_000000004").glob("rank_*.json")} == {
        "rank_0.json",
        "rank_1.json",
    }
    # W&B: offline (not logged in), losses, D(x), D(G(z)), images/s and a sample grid
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    logged = read_offline_run(str(run_dir), wait_s=10)
    keys = set().union(*logged["history"])
    assert {"train/loss_d", "train/loss_g", "train/d_real", "train/d_fake", "train/images_per_sec"} <= keys
    assert [row["_step"] for row in logged["history"] if "train/loss_d" in row] == [2, 4]
    losses = [row[k] for row in logged["history"] for k in ("train/loss_d", "train/loss_g") if k in row]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert any(row.get("samples", {}).get("_type") == "image-file" for row in logged["history"])
    assert any(f.endswith(".png") for f in logged["files"])
    assert logged["config"]["model"]["family"] == "dcgan" and logged["config"]["train"]["batch_size"] == 8
    assert state["wandb_run_id"] == logged["run_id"]


def test_resume_latest_continues_step_and_optimizer_then_sample(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "run"
    base = ["--config", TINY_GAN, "--output-dir", str(out), f"data.path={digits}"]
    assert_ok(run(launch_command("launch/train.py", base)))  # `accelerate launch` with one process
    again = launch_train(base)  # the run exists: refuse rather than overwrite it
    assert again.returncode != 0 and "already holds a run; pass --resume latest" in again.stderr
    result = launch_train([*base, "--resume", "latest", "train.max_steps=6"])
    assert_ok(result)
    assert "step_000000004" in result.stdout  # resumed from the newest checkpoint
    final = out / "checkpoints" / "step_000000006"
    assert json.loads((final / "state.json").read_text())["step"] == 6
    for net in ("G", "D"):
        adam = load_tree(final, f"opt_{net}")
        assert {float(s["step"]) for s in adam["state"].values()} == {6.0}, "optimizer state was not carried over"
    # the exported generator alone is enough to sample
    grid, folder = tmp_path / "grid.png", tmp_path / "images"
    assert sample_main(["--generator", str(out / "generator"), "--out", str(grid), "--n", "9"]) == 0
    from PIL import Image

    assert Image.open(grid).size == (3 * 18 + 2, 3 * 18 + 2)  # 3x3 grid of 16px images, 2px padding
    assert sample_main(["--generator", str(out / "generator"), "--out", str(folder), "--n", "5"]) == 0
    assert len(list(folder.glob("*.png"))) == 5 and Image.open(folder / "00000.png").size == (16, 16)
    assert set(load_file(out / "generator" / "model.safetensors")) == set(load_file(final / "G.safetensors"))


def test_time_budget_stops_cleanly_with_checkpoint_and_export(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "run"
    args = ["--config", TINY_GAN, "--output-dir", str(out), f"data.path={digits}", "train.max_steps=1000000"]
    args += ["train.max_seconds=3", "checkpoint.every=1000000", "log.every=5", "log.wandb=offline"]
    result = launch_train(args, nproc=2)
    assert_ok(result)
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    history = read_offline_run(str(run_dir), wait_s=10)["history"]
    losses = [row[k] for row in history for k in ("train/loss_d", "train/loss_g") if k in row]
    assert losses and all(math.isfinite(v) for v in losses)
    assert "train.max_seconds=3.0 spent; stopped at step" in result.stdout
    (final,) = (out / "checkpoints").glob("step_*")
    step = json.loads((final / "state.json").read_text())["step"]
    assert 0 < step < 1000000 and step % 10 == 0  # both ranks agreed on the same stopping step
    assert json.loads((out / "generator" / "config.json").read_text())["step"] == step


def _cli(*args: str, env: dict | None = None):
    return run([sys.executable, "launch/train.py", *args], env=env, timeout=60)


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--config", "dcgan_faces", "train.batchsize=3"],
            "train.batchsize: unknown key (did you mean 'train.batch_size'?)",
        ),
        (["--config", "dcgan_faces", "data.path=/no/such/celeba"], "data.path=/no/such/celeba: no such file or folder"),
        (["--config", "nope"], "--config nope: no such file or config name"),
        (
            ["--config", "dcgan_faces", "data.image_size=100"],
            "data.image_size: dcgan needs a power of two >= 16, got 100",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], expected: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


def test_hub_dataset_offline_fails_fast_with_the_fix() -> None:
    start = time.monotonic()
    result = _cli(
        "--config", "dcgan_faces", "--dry-run", env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": None}
    )
    assert result.returncode == 2 and time.monotonic() - start < 30
    assert (
        "nielsr/CelebA-faces: no such local file or folder, and the Hugging Face Hub" in result.stderr
        and "data.path=DIR" in result.stderr
    )


def test_resume_from_a_path_that_is_not_a_checkpoint(tmp_path: Path, digits: Path) -> None:
    result = _cli("--config", TINY_GAN, f"data.path={digits}", "--resume", str(tmp_path), "--output-dir", str(tmp_path))
    assert result.returncode == 2 and "not a checkpoint folder" in result.stderr


def test_dry_run_prints_resolved_config_and_derived_numbers(digits: Path) -> None:
    no_eval = ["eval.every=null", "checkpoint.best=null"]  # the demo's classifier is setup.sh's, not the test's
    result = _cli(
        "--config", "demo_digits", f"data.path={digits}", "train.grad_accum=2", *no_eval, "--dry-run",
        env={"WORLD_SIZE": "4"},
    )  # fmt: skip
    assert_ok(result)
    assert "family: dcgan" in result.stdout
    derived = json.loads(result.stdout.split("# derived:", 1)[1])
    assert derived["global_batch"] == 64 * 2 * 4 and derived["processes"] == 4
    assert derived["images_total"] == 64 * 2 * 4 * 1500 and derived["params_G"] > 0


def test_error_under_multi_process_launch_happens_before_the_process_group(digits: Path) -> None:
    result = launch_train(["--config", TINY_GAN, f"data.path={digits}", "train.sync_bn=true"], nproc=2)
    assert result.returncode != 0
    assert "error: train.sync_bn: SyncBatchNorm needs CUDA GPUs" in result.stderr
