"""The cgan family as users run it: 2-process DDP training on real labelled digits, sample.py, label errors."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from distgan.logging.images import image_uint8
from distgan.sampling import load_generator, sample
from launch.sample import main as sample_main
from tests.conftest import TEST_CONFIGS, assert_ok, launch_train, run
from tests.wandb_offline import read_offline_run

TINY_CGAN = str(TEST_CONFIGS / "tiny_cgan.yaml")
CELL = 16 + 2  # a 16px image and make_grid's 2px padding


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory, digits: Path) -> tuple[Path, str]:
    """A 4-step tiny_cgan run on the 10-class digits, 2 processes through `accelerate launch --multi_gpu`."""
    out = tmp_path_factory.mktemp("cgan") / "run"
    args = ["--config", TINY_CGAN, "--output-dir", str(out), f"data.path={digits}", "log.wandb=offline"]
    result = launch_train(args, nproc=2)
    assert_ok(result)
    return out, result.stdout


def test_two_process_training_writes_samples_checkpoint_and_generator(cgan_run: tuple[Path, str]) -> None:
    out, stdout = cgan_run
    assert "(cgan) on 2 x cpu" in stdout and '"num_classes": 10' in stdout and '"global_batch": 16' in stdout
    # sample grids: num_samples=20 with 10 classes -> 10 rows (one per class) of 2
    samples = sorted((out / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step_000000002.png", "step_000000004.png"]
    assert Image.open(samples[-1]).size == (2 * CELL + 2, 10 * CELL + 2)
    # checkpoint: the discriminator reads 1 image channel + 10 one-hot maps
    final = out / "checkpoints" / "step_000000004"
    assert (out / "checkpoints" / "latest").read_text().strip() == final.name
    d_first = next(v for k, v in load_file(final / "D.safetensors").items() if k.endswith("0.weight"))
    assert d_first.shape == (8, 1 + 10, 4, 4)
    # exported generator: rebuilt without the training config, conditioned on 10 classes
    meta = json.loads((out / "generator" / "config.json").read_text())
    assert meta["family"] == "cgan" and meta["spec"] == {"image_size": 16, "channels": 1, "num_classes": 10}
    family, G = load_generator(out / "generator")
    with torch.no_grad():
        x = G(torch.randn(3, family.z_dim), torch.tensor([0, 5, 9]))
    assert x.shape == (3, 1, 16, 16) and torch.isfinite(x).all()
    # losses and D's outputs were logged (W&B offline) at steps 2 and 4, all finite
    (wandb_dir,) = (out / "wandb").glob("offline-run-*")
    rows = [row for row in read_offline_run(str(wandb_dir), wait_s=10)["history"] if "train/loss_d" in row]
    assert [row["_step"] for row in rows] == [2, 4]
    for row in rows:
        values = [row[f"train/{k}"] for k in ("loss_d", "loss_g", "d_real", "d_fake")]
        assert all(math.isfinite(v) for v in values), row
        assert 0 < row["train/d_real"] < 1 and 0 < row["train/d_fake"] < 1


def test_sample_py_class_grid_rows_are_classes(cgan_run: tuple[Path, str], tmp_path: Path) -> None:
    generator = str(cgan_run[0] / "generator")
    grid = tmp_path / "grid.png"
    assert sample_main(["--generator", generator, "--out", str(grid), "--grid", "classes", "--seed", "5"]) == 0
    assert Image.open(grid).size == (10 * CELL + 2, 10 * CELL + 2)  # 10 classes x 10 noise vectors
    folder = tmp_path / "each"
    assert sample_main(["--generator", generator, "--out", str(folder), "--grid", "classes", "--seed", "5"]) == 0
    written = sorted(folder.glob("*.png"))
    assert len(written) == 100
    # image i is class i // 10 drawn with noise i % 10: the same as the family's own seeded layout
    family, G = load_generator(generator)
    inputs, images = sample(family, G, 100, seed=5)
    assert inputs["label"].tolist() == [i // 10 for i in range(100)]
    for i in (0, 13, 99):
        assert np.array_equal(np.asarray(Image.open(written[i])), image_uint8(images[i]))


def test_sample_py_one_class(cgan_run: tuple[Path, str], tmp_path: Path, capsys) -> None:
    generator = str(cgan_run[0] / "generator")
    folder = tmp_path / "threes"
    assert sample_main(["--generator", generator, "--out", str(folder), "--class", "3", "--n", "20"]) == 0
    written = sorted(folder.glob("*.png"))
    assert len(written) == 20 and Image.open(written[0]).size == (16, 16)
    grid = tmp_path / "threes.png"
    assert sample_main(["--generator", generator, "--out", str(grid), "--class", "3", "--n", "20"]) == 0
    assert Image.open(grid).size == (4 * CELL + 2, 5 * CELL + 2)  # a plain grid, round(sqrt(20)) per row
    capsys.readouterr()
    assert sample_main(["--generator", generator, "--out", str(grid), "--class", "10"]) == 2
    assert capsys.readouterr().err.strip() == "error: --class 10: must be in [0, 10)"


def test_sample_py_class_and_random_classes_draw_n_distinct_images(cgan_run: tuple[Path, str], tmp_path: Path) -> None:
    generator = str(cgan_run[0] / "generator")
    for extra in (["--class", "7"], []):
        folder = tmp_path / f"out{len(extra)}"
        # 64 is not a multiple of the 10 classes
        assert sample_main(["--generator", generator, "--out", str(folder), "--n", "64", *extra]) == 0
        written = sorted(folder.glob("*.png"))
        assert len(written) == 64 and len({Image.open(p).tobytes() for p in written}) == 64


def test_label_outside_num_classes_is_a_one_line_error(digits: Path, tmp_path: Path) -> None:
    args = ["launch/train.py", "--config", TINY_CGAN, f"data.path={digits}", "data.num_classes=5"]
    result = run([sys.executable, *args, "--output-dir", str(tmp_path / "run")], timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: data.label: label ") and lines[0].endswith(
        " is outside [0, 5); fix the data or set data.num_classes"
    )
    assert int(lines[0].split()[3]) >= 5  # names the offending value


def test_label_error_stops_a_two_process_run(digits: Path, tmp_path: Path) -> None:
    args = ["--config", TINY_CGAN, "--output-dir", str(tmp_path / "run"), f"data.path={digits}", "data.num_classes=5"]
    result = launch_train(args, nproc=2, timeout=180)
    assert result.returncode != 0
    assert "is outside [0, 5); fix the data or set data.num_classes" in result.stderr
