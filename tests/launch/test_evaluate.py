"""launch/evaluate.py as users run it: on a generator through the real launcher (1 and 2 processes), and bad input."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import assert_ok, launch_command, run
from tests.metrics.helpers import export_tiny_generator, tiny_classifier


def evaluate(args: list[str], nproc: int = 1, env: dict | None = None):
    """`python launch/evaluate.py ARGS`, or through `accelerate launch --multi_gpu` for nproc > 1."""
    cmd = (
        [sys.executable, "launch/evaluate.py", *args]
        if nproc == 1
        else launch_command("launch/evaluate.py", args, nproc)
    )
    return run(cmd, timeout=300, env=env)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, digits):
    return tiny_classifier(tmp_path_factory, digits)


def test_one_and_two_processes_give_the_same_numbers(classifier, digits, tmp_path):
    gen = export_tiny_generator(tmp_path / "gen", z_dim=8, ngf=8, ndf=8)
    args = ["--generator", str(gen), "--data", str(digits), "--metrics", "fid,kid,is,pr", "--num-samples", "150"]
    args += ["--features", f"classifier:{classifier}", "--batch", "32"]  # 5 chunks: ranks own 3 and 2
    one = evaluate(args + ["--cache-dir", str(tmp_path / "c1"), "--out", str(tmp_path / "one.json")])
    two = evaluate(args + ["--cache-dir", str(tmp_path / "c2")], nproc=2)
    assert_ok(one)
    assert_ok(two)
    a, b = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (one, two))
    assert json.loads((tmp_path / "one.json").read_text()) == a
    assert (a["processes"], b["processes"], a["num_fake"], a["num_real"]) == (1, 2, 150, 1797)
    assert a["extractor"].startswith("classifier:") and "note" in a and "images/s" in one.stdout
    assert "KID used 100 subsets of 150" in one.stdout
    for key in ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall"):
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-12), key
    assert a["fid"] > 0


def test_class_conditional_accuracy_and_per_class_fid(classifier, digits, tmp_path):
    gen = export_tiny_generator(tmp_path / "cgan", family="cgan", z_dim=8, ngf=8, ndf=8)
    args = ["--generator", str(gen), "--data", str(digits), "--metrics", "fid,acc,fid_per_class"]
    result = evaluate(args + ["--num-samples", "200", "--features", f"classifier:{classifier}"])
    assert_ok(result)
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 <= values["accuracy"] <= 1 and values["fid"] > 0
    assert sum(k.startswith("fid_class_") for k in values) == 10


def test_image_to_image_scores_translated_sources_against_targets(classifier, tmp_path):
    shapes = tmp_path / "shapes"
    assert_ok(run([sys.executable, "scripts/prepare_shapes.py", "--out", str(shapes), "--n", "40", "--shards", "1"]))
    gen = export_tiny_generator(tmp_path / "p2p", family="pix2pix", size=32, channels=3, ngf=8, ndf=8)
    args = ["--generator", str(gen), "--data", str(shapes), "--metrics", "fid,l1", "--num-samples", "24"]
    result = evaluate(args + ["--features", f"classifier:{classifier}", "--batch", "8", "--cache-dir", str(tmp_path)])
    assert_ok(result)
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert (values["num_fake"], values["num_real"]) == (24, 24)  # 24 translated sources vs their 24 targets
    assert values["l1"] > 0 and values["fid"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--real", "/nonexistent/real", "--fake", "/nonexistent/fake"], "--real /nonexistent/real: no such folder"),
        (["--real", ".", "--fake", ".", "--metrics", "fid,fancy"], "--metrics: unknown fancy"),
        (["--real", ".", "--fake", "."], "weights-inception-2015-12-05-6726825d.pth not found (offline)"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(args, message, tmp_path):
    env = {"TORCH_HOME": str(tmp_path / "torch_home"), "DISTGAN_OFFLINE": "1"}  # never the real hub cache
    result = run([sys.executable, "launch/evaluate.py", *args], timeout=120, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "torch_home").exists()
