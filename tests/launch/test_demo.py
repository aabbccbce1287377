"""The demo as a newcomer meets it, shortened: configs/demo_digits.yaml through the real launcher on 2 processes
logs the EMA generator's classifier-FID to W&B and prints the first and last value at the end."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.conftest import assert_ok, launch_train
from tests.metrics.helpers import tiny_classifier
from tests.wandb_offline import read_offline_run


def test_demo_logs_the_classifier_fid_and_prints_it_at_the_end(tmp_path: Path, tmp_path_factory, digits: Path):
    classifier = tiny_classifier(tmp_path_factory, digits, size=32)  # what setup.sh trains, in miniature
    out = tmp_path / "run"
    args = ["--config", "demo_digits", "--output-dir", str(out), f"data.path={digits}", "log.wandb=offline"]
    args += ["train.max_steps=4", "train.batch_size=16", "log.sample_every=4", "checkpoint.every=4"]
    args += ["eval.every=2", "eval.num_samples=96", f"eval.features=classifier:{classifier}"]  # the demo's eval, tiny
    result = launch_train(args, nproc=2, env={"DISTGAN_CACHE": str(tmp_path / "reference")})
    assert_ok(result)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["generator"], r["num_fake"], r["num_real"]) for r in rows] == [
        (2, "EMA", 96, 1797),
        (4, "EMA", 96, 1797),
    ]
    assert all(r["features"] == f"classifier:{classifier}" and r["seconds"] > 0 for r in rows)
    # W&B (offline run files, read back): eval/fid and the precision/recall of the demo at the training steps
    (wandb_run,) = (out / "wandb").glob("offline-run-*")
    run = read_offline_run(str(wandb_run), wait_s=10)
    logged = [row for row in run["history"] if "eval/fid" in row]
    assert [row["_step"] for row in logged] == [2, 4]
    assert [row["eval/fid"] for row in logged] == [r["fid"] for r in rows]
    assert all(math.isfinite(row["eval/fid"]) and row["eval/fid"] > 0 for row in logged)
    assert all(0 <= row["eval/precision"] <= 1 and 0 <= row["eval/recall"] <= 1 for row in logged)
    assert run["config"]["eval"]["features"] == f"classifier:{classifier}"
    assert run["config"]["checkpoint"]["best"] == "fid"  # the demo keeps its best checkpoint
    assert (out / "checkpoints" / json.loads((out / "checkpoints" / "best.json").read_text())["checkpoint"]).is_dir()
    # the end of the output: the first and last classifier-FID, labelled as such
    last_line = result.stdout.strip().splitlines()[-1]
    first, last = rows[0]["fid"], rows[-1]["fid"]
    assert last_line.startswith(f"distgan: eval/fid of the EMA G: {first:.4g} at step 2 -> {last:.4g} at step 4")
    assert f"features of the classifier {classifier}" in last_line and "never with papers' Inception FID" in last_line
