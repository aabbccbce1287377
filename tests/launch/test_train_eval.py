"""Evaluation during training as users meet it: 2 processes, W&B offline, metrics.jsonl, the best checkpoint,
the EMA generator exported beside the raw one, and start-up errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launch.sample import main as sample_main
from tests.conftest import TEST_CONFIGS, assert_ok, launch_train, run
from tests.metrics.helpers import tiny_classifier
from tests.wandb_offline import read_offline_run

TINY_DCGAN = str(TEST_CONFIGS / "tiny_dcgan.yaml")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, digits):
    return tiny_classifier(tmp_path_factory, digits)


def test_two_processes_evaluate_the_ema_log_it_and_keep_the_best(tmp_path: Path, digits: Path, classifier: Path):
    out = tmp_path / "run"
    args = ["--config", TINY_DCGAN, "--output-dir", str(out), f"data.path={digits}", "log.wandb=offline"]
    args += ["train.max_steps=8", "checkpoint.every=2", "checkpoint.keep=1", "eval.every=4", "eval.num_samples=96"]
    args += [f"eval.features=classifier:{classifier}", "eval.metrics=[fid,pr]", "checkpoint.best=fid"]
    result = launch_train(args, nproc=2)
    assert_ok(result)
    assert "eval at step 4 (EMA G, 96 samples) (classifier features" in result.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8] and all(r["generator"] == "EMA" and r["num_fake"] == 96 for r in rows)
    assert all(r["fid"] > 0 and 0 <= r["precision"] <= 1 for r in rows)
    # the best checkpoint: named in best.json, the lowest FID, kept although checkpoint.keep=1
    best = json.loads((out / "checkpoints" / "best.json").read_text())
    assert best["metric"] == "fid" and best["value"] == min(r["fid"] for r in rows)
    assert (out / "checkpoints" / best["checkpoint"] / "manifest.json").is_file()
    assert f"best fid={best['value']:.4g} at step {best['step']}" in result.stdout
    assert (out / "checkpoints" / "step_000000008").is_dir() and not (out / "checkpoints" / "step_000000002").exists()
    # W&B: eval/<metric> at the training steps, and both grids (EMA and raw)
    (wandb_run,) = (out / "wandb").glob("offline-run-*")
    history = read_offline_run(str(wandb_run), wait_s=10)["history"]
    assert [row["_step"] for row in history if "eval/fid" in row] == [4, 8]
    assert [row["eval/fid"] for row in history if "eval/fid" in row] == [r["fid"] for r in rows]
    for key in ("samples", "samples_raw"):
        assert any(row.get(key, {}).get("_type") == "image-file" for row in history), key
    assert (out / "samples" / "step_000000008.png").is_file() and (
        out / "samples" / "raw" / "step_000000008.png"
    ).is_file()
    # the EMA is in the checkpoint, exported as model.safetensors, with the trained G beside it
    assert (out / "checkpoints" / "step_000000008" / "G_ema.safetensors").is_file()
    meta = json.loads((out / "generator" / "config.json").read_text())
    assert meta["weights"] == "ema" and (out / "generator" / "model_raw.safetensors").is_file()
    ema, raw = tmp_path / "ema.png", tmp_path / "raw.png"
    assert sample_main(["--generator", str(out / "generator"), "--out", str(ema), "--n", "4", "--device", "cpu"]) == 0
    assert sample_main(["--generator", str(out / "generator"), "--out", str(raw), "--n", "4", "--raw"]) == 0
    ema_pixels, raw_pixels = (np.asarray(Image.open(p)) for p in (ema, raw))
    assert ema_pixels.shape == raw_pixels.shape and (ema_pixels != raw_pixels).any()  # two different generators
    # the last evaluation scored the exported generator, although BatchNorm statistics differ per process
    # (every rank generated with the main process's): evaluate.py on it gives the same numbers
    cmd = [sys.executable, "launch/evaluate.py", "--generator", str(out / "generator"), "--data", str(digits)]
    cmd += ["--features", f"classifier:{classifier}", "--metrics", "fid,pr", "--num-samples", "96"]
    result = run(cmd + ["--cache-dir", str(tmp_path / "cache")], timeout=120)
    assert_ok(result)
    again = json.loads(result.stdout.strip().splitlines()[-1])
    assert again["fid"] == pytest.approx(rows[-1]["fid"], rel=1e-6)
    assert (again["precision"], again["recall"]) == (rows[-1]["precision"], rows[-1]["recall"])


def test_missing_inception_weights_stop_the_run_before_it_starts(tmp_path: Path, digits: Path):
    out = tmp_path / "run"
    cmd = [sys.executable, "launch/train.py", "--config", TINY_DCGAN, "--output-dir", str(out), f"data.path={digits}"]
    result = run([*cmd, "eval.every=2"], env={"TORCH_HOME": str(tmp_path / "torch"), "DISTGAN_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith("error: eval.features=inception (eval.every=2): Inception weights")
    assert "weights-inception-2015-12-05-6726825d.pth" in line and str(tmp_path / "torch") in line
    assert not out.exists() and not (tmp_path / "torch" / "hub").exists()  # nothing trained, nothing written


@pytest.mark.parametrize(
    "override, message",
    [
        ("checkpoint.best=fid", "checkpoint.best: needs evaluation during training; set eval.every"),
        ("checkpoint.best=psnr", "checkpoint.best: unknown metric 'psnr'"),
        ("eval.metrics=[fid,bogus]", "eval.metrics: unknown bogus"),
        ("eval.features=resnet", "eval.features: must be 'inception' or 'classifier:PATH'"),
        ("train.ema_kimg=-1", "train.ema_kimg: must be in [0,"),
    ],
)
def test_eval_config_errors(override: str, message: str):
    from distgan.config import load_config
    from distgan.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(TINY_DCGAN, ["data.path=x", override])
