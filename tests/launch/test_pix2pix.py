"""The pix2pix family as users run it: 2-process DDP training on real A|B pairs, panels, sample.py --input."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from distgan.sampling import load_generator
from launch.sample import main as sample_main
from tests.conftest import TEST_CONFIGS, assert_ok, launch_train, run
from tests.wandb_offline import read_offline_run

TINY_PIX2PIX = str(TEST_CONFIGS / "tiny_pix2pix.yaml")
SIZE = 32
CELL = SIZE + 2  # a 32px image and make_grid's 2px padding


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """64 outline | filled pairs (32x32 each, A|B side by side) in 2 parquet shards, from the repo's script."""
    out = tmp_path_factory.mktemp("shapes")
    result = run([sys.executable, "scripts/prepare_shapes.py", "--out", str(out), "--n", "64", "--shards", "2"])
    assert_ok(result)
    return out


@pytest.fixture(scope="module")
def p2p_run(tmp_path_factory, shapes: Path) -> tuple[Path, str]:
    """A 4-step tiny_pix2pix run (random crop 36 -> 32 and flip), 2 processes through `accelerate launch`."""
    out = tmp_path_factory.mktemp("pix2pix") / "run"
    args = ["--config", TINY_PIX2PIX, "--output-dir", str(out), f"data.path={shapes}", "log.wandb=offline"]
    result = launch_train(args, nproc=2)
    assert_ok(result)
    return out, result.stdout


def test_two_process_training_writes_panels_checkpoint_and_generator(p2p_run: tuple[Path, str]) -> None:
    out, stdout = p2p_run
    assert "(pix2pix) on 2 x cpu" in stdout and '"global_batch": 8' in stdout
    # panels: num_samples=4 examples from the first batch (batch_size=4), one row each of source | generated | target
    samples = sorted((out / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step_000000002.png", "step_000000004.png"]
    panel = np.asarray(Image.open(samples[-1]).convert("RGB")).astype(int)
    assert panel.shape == (4 * CELL + 2, 3 * CELL + 2, 3)
    cells = [panel[2 : 2 + SIZE, 2 + c * CELL : 2 + c * CELL + SIZE] for c in range(3)]  # first row's 3 images
    spread = [int((cell.max(-1) - cell.min(-1)).max()) for cell in cells]  # colourfulness of each cell
    assert spread[0] < 40 and spread[2] > 100  # source: a grey-white outline; target: a red/green/blue shape
    assert (cells[0] > 200).any() and cells[1].std() > 0  # a lit outline; something generated
    # checkpoint: D reads source and image concatenated (3 + 3 channels), 8 filters (ndf)
    final = out / "checkpoints" / "step_000000004"
    assert (out / "checkpoints" / "latest").read_text().strip() == final.name
    assert load_file(final / "D.safetensors")["net.0.weight"].shape == (8, 6, 4, 4)
    # exported generator: rebuilt without the training config, translates (B, 3, 32, 32) -> (B, 3, 32, 32)
    meta = json.loads((out / "generator" / "config.json").read_text())
    assert meta["family"] == "pix2pix" and "z_dim" not in meta["params"]
    assert meta["spec"] == {"image_size": SIZE, "channels": 3, "num_classes": None}
    family, G = load_generator(out / "generator")
    with torch.no_grad():
        x = G(torch.rand(2, 3, SIZE, SIZE) * 2 - 1)
    assert x.shape == (2, 3, SIZE, SIZE) and torch.isfinite(x).all()
    # losses (adversarial and L1 apart) and D's outputs were logged (W&B offline) at steps 2 and 4, all finite
    (wandb_dir,) = (out / "wandb").glob("offline-run-*")
    rows = [row for row in read_offline_run(str(wandb_dir), wait_s=10)["history"] if "train/loss_d" in row]
    assert [row["_step"] for row in rows] == [2, 4]
    for row in rows:
        values = [row[f"train/{k}"] for k in ("loss_d", "loss_g", "loss_g_adv", "l1", "d_real", "d_fake")]
        assert all(math.isfinite(v) for v in values), row
        assert row["train/loss_g"] == pytest.approx(row["train/loss_g_adv"] + 100 * row["train/l1"], rel=1e-4)
        assert 0 < row["train/l1"] < 2 and 0 < row["train/d_real"] < 1 and 0 < row["train/d_fake"] < 1


def _source_folder(shapes: Path, folder: Path) -> list[str]:
    """Left halves (the outlines) of the first pairs as PNGs: two at 32x32, one larger (resized on input)."""
    ds = datasets.load_dataset("parquet", data_dir=str(shapes), split="train")
    folder.mkdir()
    names = ["a", "b", "large"]
    for i, name in enumerate(names):
        outline = ds[i]["image"].crop((0, 0, SIZE, SIZE))
        (outline.resize((48, 48)) if name == "large" else outline).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not an image")  # ignored
    return names


def test_sample_py_translates_a_folder(p2p_run: tuple[Path, str], shapes: Path, tmp_path: Path, capsys) -> None:
    source, out = tmp_path / "in", tmp_path / "translated"
    names = _source_folder(shapes, source)
    assert sample_main(["--generator", str(p2p_run[0] / "generator"), "--input", str(source), "--out", str(out)]) == 0
    assert "translated 3 images" in capsys.readouterr().out
    written = sorted(out.glob("*.png"))
    assert [p.stem for p in written] == sorted(names)  # one output per input, same name
    for path in written:
        image = Image.open(path)
        assert image.size == (SIZE, SIZE) and image.mode == "RGB"


def test_sample_py_without_input_says_how(p2p_run: tuple[Path, str], tmp_path: Path, capsys) -> None:
    from launch.sample import main  # in-process: the same entry point, without another interpreter start

    assert main(["--generator", str(p2p_run[0] / "generator"), "--out", str(tmp_path / "grid.png")]) == 2
    assert "an image-to-image generator needs --input FOLDER" in capsys.readouterr().err
    assert not (tmp_path / "grid.png").exists()
