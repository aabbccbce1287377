"""Real `datasets` streaming from local files: per-rank split, reshuffling, transforms and input errors."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from distgan.config import DataConfig
from distgan.data import ImageStream, resolve_source
from distgan.data.stream import stop_workers
from distgan.errors import DistganError
from tests.data.conftest import write_indexed

N = 96  # examples in the indexed dataset


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """N images whose label is their index, in 3 parquet shards (not divisible by 2 ranks x 1 worker)."""
    return write_indexed(tmp_path_factory.mktemp("indexed"), N, 8)


def _epoch_labels(stream: ImageStream, rank: int, world: int, batch: int, epochs: int = 2) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for (epoch, _), b in stream.batches(batch, seed=0, rank=rank, world_size=world):
        if epoch >= epochs:
            break
        out.setdefault(epoch, []).extend(b["label"].tolist())
    return out


def test_batches_are_shaped_scaled_and_labelled(digits: Path) -> None:
    stream = ImageStream(DataConfig(path=str(digits), image_size=16, channels=1, cache_mb=0), ("image", "label"))
    assert stream.spec.num_classes == 10 and stream.spec.image_size == 16
    _, batch = next(stream.batches(32, seed=0, rank=0, world_size=1))
    assert batch["image"].shape == (32, 1, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1 and batch["image"].std() > 0.3
    assert batch["label"].dtype == torch.int64 and 0 <= batch["label"].min() and batch["label"].max() < 10


def test_ranks_are_disjoint_cover_the_data_and_reshuffle(indexed: Path) -> None:
    cfg = DataConfig(path=str(indexed), image_size=8, channels=1, shuffle_buffer=32, num_workers=1, cache_mb=0)
    stream = ImageStream(cfg, ("image", "label"))
    per_rank = [_epoch_labels(stream, rank, 2, batch=4) for rank in (0, 1)]
    for epoch in (0, 1):
        a, b = set(per_rank[0][epoch]), set(per_rank[1][epoch])
        assert not a & b, "ranks overlap"
        assert len(a | b) >= N - 2 * 4, "more than the last partial batch per rank was dropped"
    assert per_rank[0][0] != per_rank[0][1], "the second epoch was not reshuffled"


def test_single_process_sees_everything_in_order_without_shuffle(indexed: Path) -> None:
    cfg = DataConfig(path=str(indexed), image_size=8, channels=1, shuffle_buffer=0, num_workers=0, cache_mb=0)
    labels = _epoch_labels(ImageStream(cfg, ("image", "label")), 0, 1, batch=8, epochs=1)[0]
    assert labels == list(range(N))


def test_imagefolder_source(tmp_path: Path) -> None:
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(np.random.randint(0, 255, (20, 30, 3), np.uint8)).save(tmp_path / cls / f"{i}.png")
    assert resolve_source(str(tmp_path)).builder == "imagefolder"
    stream = ImageStream(DataConfig(path=str(tmp_path), image_size=16, channels=3, num_workers=0), ("image", "label"))
    assert stream.spec.num_classes == 2
    _, batch = next(stream.batches(4, seed=0, rank=0, world_size=1))
    assert batch["image"].shape == (4, 3, 16, 16)  # resized and center-cropped from 20x30


def test_missing_path_is_a_clear_error() -> None:
    with pytest.raises(DistganError, match=r"^data.path=/no/such/dir: no such file or folder$"):
        resolve_source("/no/such/dir")


def test_hub_id_offline_fails_fast_and_says_how_to_use_a_local_copy(monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: like no network
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(DistganError) as info:
        resolve_source("nielsr/CelebA-faces")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert (
        "\n" not in message
        and "Hugging Face Hub (127.0.0.1) cannot be reached" in message
        and "data.path=DIR" in message
    )


def test_wrong_column_names_the_key(digits: Path) -> None:
    with pytest.raises(DistganError, match=r"data.image_column='img': no such column .* \(columns: image, label\)"):
        ImageStream(DataConfig(path=str(digits), image_column="img"), ("image",))


def test_label_outside_num_classes_is_an_error_naming_the_value(digits: Path) -> None:
    stream = ImageStream(DataConfig(path=str(digits), image_size=16, channels=1, num_classes=3), ("image", "label"))
    with pytest.raises(DistganError, match=r"label \d is outside \[0, 3\)"):
        for _ in zip(range(20), stream.batches(64, seed=0, rank=0, world_size=1)):
            pass


def test_batch_larger_than_the_data_is_an_error(indexed: Path) -> None:
    stream = ImageStream(DataConfig(path=str(indexed), image_size=8, channels=1, num_workers=0), ("image",))
    with pytest.raises(DistganError, match="no full batch of 500"):
        next(stream.batches(500, seed=0, rank=0, world_size=1))


def _pairs(tmp_path: Path, two_columns: bool) -> Path:
    """A is a random texture, B = 255 - A: a pair whose halves stay aligned only if cropped/flipped alike."""
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {"image": [], "source": []} if two_columns else {"image": []}
    for _ in range(16):
        a = rng.integers(0, 256, (40, 40), dtype=np.uint8)
        b = 255 - a
        if two_columns:
            rows["source"].append(Image.fromarray(a, mode="L"))
            rows["image"].append(Image.fromarray(b, mode="L"))
        else:
            rows["image"].append(Image.fromarray(np.concatenate([a, b], axis=1), mode="L"))
    features = datasets.Features({k: datasets.Image() for k in rows})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "train.parquet"))
    return tmp_path / "train.parquet"


@pytest.mark.parametrize("two_columns", [False, True], ids=["A|B side by side", "two columns"])
def test_pairs_get_the_same_random_crop_and_flip(tmp_path: Path, two_columns: bool) -> None:
    path = _pairs(tmp_path, two_columns)
    cfg = DataConfig(
        path=str(path),
        image_size=16,
        channels=1,
        load_size=24,
        random_flip=True,
        num_workers=0,
        shuffle_buffer=0,
        source_column="source" if two_columns else None,
    )
    _, batch = next(ImageStream(cfg, ("image", "source")).batches(16, seed=0, rank=0, world_size=1))
    assert batch["source"].shape == batch["image"].shape == (16, 1, 16, 16)
    # B = 255 - A, so in [-1, 1] target = -source exactly where crop and flip agree (up to resampling)
    assert (batch["image"] + batch["source"]).abs().max() < 0.05
    assert (batch["source"][:, :, :, 0] - batch["source"][:, :, :, -1]).abs().max() > 0.1  # not blank


def test_direction_swaps_source_and_target(tmp_path: Path) -> None:
    rows = [Image.fromarray(np.concatenate([np.zeros((8, 8)), np.full((8, 8), 255)], axis=1).astype(np.uint8))] * 4
    datasets.Dataset.from_dict({"image": rows}, features=datasets.Features({"image": datasets.Image()})).to_parquet(
        str(tmp_path / "train.parquet")
    )
    for direction, source_value in (("AtoB", -1.0), ("BtoA", 1.0)):
        cfg = DataConfig(path=str(tmp_path), image_size=8, channels=1, direction=direction, num_workers=0)
        _, batch = next(ImageStream(cfg, ("image", "source")).batches(4, seed=0, rank=0, world_size=1))
        assert torch.allclose(batch["source"], torch.full_like(batch["source"], source_value), atol=0.02)
        assert torch.allclose(batch["image"], -batch["source"], atol=0.04)


def test_resuming_at_a_position_continues_the_stream_exactly(indexed: Path) -> None:
    """No example repeated or skipped: (epoch, k) yields what an uninterrupted stream yields after k batches,
    across the epoch boundary, with shuffling and random crops/flips reproduced."""
    cfg = DataConfig(path=str(indexed), image_size=6, channels=1, shuffle_buffer=32, num_workers=1, cache_mb=0)
    cfg.load_size, cfg.random_flip = 8, True
    stream = ImageStream(cfg, ("image", "label"))
    straight = [item for _, item in zip(range(30), stream.batches(4, seed=3, rank=1, world_size=2))]
    k = 17  # past the first epoch's 12 batches of 4 (48 examples for rank 1 of 2)
    (epoch, index), _ = straight[k - 1]
    resumed = stream.batches(4, seed=3, rank=1, world_size=2, position=(epoch, index + 1))
    for (pos, expected), (pos_again, batch) in zip(straight[k:], resumed):
        assert pos == pos_again
        assert torch.equal(expected["label"], batch["label"]) and torch.equal(expected["image"], batch["image"])


def test_the_next_epoch_loader_starts_while_the_current_epoch_is_read(indexed: Path) -> None:
    """Its workers open the files and prefetch during this epoch, so an epoch boundary does not stall training."""
    cfg = DataConfig(path=str(indexed), image_size=8, channels=1, shuffle_buffer=0, num_workers=1, cache_mb=0)
    batches = ImageStream(cfg, ("image",)).batches(4, seed=0, rank=0, world_size=1)
    before = {p.pid for p in multiprocessing.active_children()}
    next(batches)
    started = {p.pid for p in multiprocessing.active_children()} - before
    assert len(started) == 2, "expected this epoch's worker and the next epoch's"
    batches.close()  # both loaders' workers are ended at once (they ignore SIGTERM: torch would wait on them)
    assert not started & {p.pid for p in multiprocessing.active_children()}, "a worker outlived the closed stream"


def test_stopping_workers_does_not_need_the_locks_a_killed_worker_may_hold() -> None:
    """A worker SIGKILLed inside `done_event.is_set()` leaves the event's lock held forever; torch's own shutdown
    then hangs in `done_event.set()` (a test process hung there for 20 minutes). Held here as a dead worker
    would leave it, stopping must still end at once."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(64)), batch_size=4, num_workers=1)
    it = iter(loader)
    next(it)
    lock = it._workers_done_event._cond
    assert lock.acquire(timeout=5)
    try:
        stopper = threading.Thread(target=stop_workers, args=(it,), daemon=True)
        stopper.start()
        stopper.join(timeout=20)
        assert not stopper.is_alive(), "stop_workers waited on a lock that a killed worker holds"
    finally:
        lock.release()
    assert not any(w.is_alive() for w in it._workers)
