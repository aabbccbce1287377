"""The pix2pix family learns its translation: outlines of shapes -> the shapes filled in their kind's colour.

scripts/prepare_shapes.py writes A|B pairs (white outline of a random circle / square / triangle | the
shape filled red / green / blue) for training and, with another seed, a held-out test split. pix2pix is
trained on them through the real code path (config -> paired stream -> family -> loop -> exported
generator), in-process on one CPU process, and the exported generator (eval mode, dropout on as in the
paper) is compared with the target on the held-out pairs by mean L1 (images in [-1, 1]):
  - against the same generator untrained (same seed): learning anything beats it by far;
  - against painting everything black (the background): beating that by a margin needs the shapes'
    insides painted, not just the background learned (the colour per kind comes later in training).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from distgan.config import DataConfig, load_config
from distgan.data import ImageStream
from distgan.models.pix2pix import Pix2Pix
from distgan.sampling import load_generator
from distgan.train.loop import prepare, train
from tests.conftest import TEST_CONFIGS, run

SIZE = 32
TRAIN, TEST = 1024, 128  # pairs
STEPS = 400  # batch 16: ~6 epochs
MAX_VS_UNTRAINED = 0.25  # trained L1 / untrained L1; seeds 0-4 measured 0.14-0.15
MAX_VS_BLACK = 0.75  # trained L1 / all-black L1; seeds 0-4 measured 0.56-0.62 (background only: ~1.0)


def prepare_shapes(out: Path, split: str, n: int, seed: int) -> None:
    result = run(
        [sys.executable, "scripts/prepare_shapes.py", "--out", str(out), "--split", split]
        + ["--n", str(n), "--size", str(SIZE), "--seed", str(seed)]
    )
    assert result.returncode == 0, result.stderr


def train_pix2pix(data: Path, run_dir: Path, seed: int) -> Path:
    """Train in this process through the framework's own loop; returns the exported generator."""
    overrides = [
        f"data.path={data}",
        "data.load_size=null",  # no random crop: the test split is not cropped either
        "data.shuffle_buffer=1024",
        "data.num_workers=1",  # decoding in a worker, on the other core
        f"train.max_steps={STEPS}",
        "train.batch_size=16",
        f"train.seed={seed}",
        "train.lr_g=1e-3",  # 5x the paper's 2e-4: the check has seconds, not hours
        "train.lr_d=1e-3",
        f"log.every={STEPS}",
        f"log.sample_every={STEPS}",
        f"checkpoint.every={STEPS}",
    ]
    cfg = load_config(str(TEST_CONFIGS / "tiny_pix2pix.yaml"), overrides)  # ngf = ndf = 8
    threads = torch.get_num_threads()
    # Tiny convolutions run fastest on one thread; on 2 cores shared with other processes OpenMP's
    # spinning threads made steps many times slower in measurements.
    torch.set_num_threads(1)
    try:
        train(prepare(cfg, run_dir, None), run_dir)
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)  # the singleton would leak this run's settings into later tests
    return run_dir / "generator"


def held_out_pairs(data: Path) -> dict[str, torch.Tensor]:
    """All TEST pairs of the test split as one batch: "source" (outlines) and "image" (filled shapes)."""
    cfg = DataConfig(path=str(data), split="test", image_size=SIZE, channels=3, shuffle_buffer=0, num_workers=0)
    _, batch = next(ImageStream(cfg, Pix2Pix.columns).batches(TEST, seed=0, rank=0, world_size=1))
    return batch


@torch.no_grad()
def mean_l1(G: torch.nn.Module, pairs: dict[str, torch.Tensor], seed: int) -> float:
    torch.manual_seed(seed)  # the dropout masks (dropout stays on in eval)
    return float((G(pairs["source"]) - pairs["image"]).abs().mean())


def learning_check(tmp: Path, seed: int) -> dict[str, float]:
    """Train with `seed`; held-out L1 of the trained and untrained generators and of two trivial answers."""
    data = tmp / "shapes"
    prepare_shapes(data, "train", TRAIN, seed)
    prepare_shapes(data, "test", TEST, seed + 1000)  # other shapes than in training
    family, G = load_generator(train_pix2pix(data, tmp / "run", seed))
    torch.manual_seed(seed)  # what train.seed gave the trainer's G before its first step
    untrained = family.build_generator().eval()
    pairs = held_out_pairs(data)
    return {
        "trained": mean_l1(G, pairs, seed),
        "untrained": mean_l1(untrained, pairs, seed),
        "black": float((pairs["image"] + 1).abs().mean()),  # background everywhere
        "copy_source": float((pairs["source"] - pairs["image"]).abs().mean()),  # the outline as the answer
    }


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict[str, float]:
    start = time.perf_counter()
    out = learning_check(tmp_path_factory.mktemp("pix2pix_learns"), seed=0)
    out["seconds"] = time.perf_counter() - start
    print(f"pix2pix learning check: {out}")
    return out


def test_l1_falls_far_below_the_untrained_generator(result: dict[str, float]) -> None:
    assert result["trained"] < MAX_VS_UNTRAINED * result["untrained"], result


def test_shapes_are_filled_not_just_the_background_learned(result: dict[str, float]) -> None:
    assert result["trained"] < MAX_VS_BLACK * result["black"], result
    assert result["trained"] < result["copy_source"], result
