"""A small split decoded once into memory (`data.cache_mb`): the same images as the stream, the stream's rank
layout (1 x B and 2 x B/2 see the same global batches), reshuffled per epoch, exact from any position."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distgan.config import DataConfig
from distgan.data import ImageStream
from distgan.errors import DistganError
from tests.data.conftest import write_indexed

N = 50  # examples: not divisible by 2 ranks x batch 4


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """N images whose pixels and label are their index, in 3 parquet shards."""
    return write_indexed(tmp_path_factory.mktemp("indexed"), N, 10)


def config(path: Path, **kw) -> DataConfig:
    return DataConfig(path=str(path), channels=1, **{"image_size": 8, "shuffle_buffer": 16, "num_workers": 0, **kw})


def take(stream: ImageStream, n: int, rank: int = 0, world: int = 1, batch: int = 4, position=(0, 0)) -> list:
    return [
        item for _, item in zip(range(n), stream.batches(batch, seed=3, rank=rank, world_size=world, position=position))
    ]


def test_cached_only_when_the_transform_is_fixed_and_the_split_fits(indexed: Path, capsys) -> None:
    assert ImageStream(config(indexed), ("image",)).cached()
    assert not ImageStream(config(indexed, cache_mb=0), ("image",)).cached()
    assert not ImageStream(config(indexed, random_flip=True), ("image",)).cached()  # new images every epoch
    assert not ImageStream(config(indexed, load_size=10), ("image",)).cached()  # random crops
    big = ImageStream(config(indexed, image_size=1024, cache_mb=100), ("image",))  # 50 x 1 MB
    assert big.decoded_mb() == pytest.approx(50) and big.cached()
    assert not ImageStream(config(indexed, image_size=1024, cache_mb=49), ("image",)).cached()
    take(ImageStream(config(indexed), ("image",)), 1)
    assert "data: 50 examples decoded into memory once" in capsys.readouterr().out


def test_same_images_as_the_stream_each_epoch_reshuffled(indexed: Path) -> None:
    """Without shuffling, memory gives the stream's file order and values; with it, a new order every epoch."""
    plain = dict(shuffle_buffer=0)
    streamed = take(ImageStream(config(indexed, cache_mb=0, **plain), ("image", "label")), 12)
    memory = take(ImageStream(config(indexed, **plain), ("image", "label")), 12)
    for (pos, a), (pos_m, b) in zip(streamed, memory):
        assert pos == pos_m and torch.equal(a["label"], b["label"]) and torch.equal(a["image"], b["image"])
        assert b["image"].dtype == torch.float32 and b["image"].shape == (4, 1, 8, 8)
    shuffled = take(ImageStream(config(indexed), ("image", "label")), 24)  # 12 batches per epoch
    epochs = [[int(x) for _, b in shuffled if _[0] == e for x in b["label"]] for e in (0, 1)]
    assert len(set(epochs[0])) == len(set(epochs[1])) == 48, "an example repeated within an epoch"
    assert epochs[0] != epochs[1], "the second epoch was not reshuffled"
    for _, b in shuffled:  # every image is its label's
        assert torch.allclose(b["image"][:, 0, 0, 0], b["label"].float() / 255 * 2 - 1)


def test_ranks_interleave_so_the_global_batch_does_not_depend_on_the_process_count(indexed: Path) -> None:
    """Rank r's example k of batch i is global sample (i * B + k) * W + r of 1 process x (B * W)."""
    stream = ImageStream(config(indexed), ("image", "label"))
    one = take(stream, 6, batch=8)
    two = [take(stream, 6, rank=r, world=2) for r in (0, 1)]
    for i in range(6):
        expected = one[i][1]["label"]
        together = torch.stack([two[0][i][1]["label"], two[1][i][1]["label"]], dim=1).flatten()
        assert torch.equal(together, expected)
    labels = [set(int(x) for _, b in two[r][:6] for x in b["label"]) for r in (0, 1)]
    assert not labels[0] & labels[1], "ranks overlap"


def test_resuming_at_a_position_continues_exactly(indexed: Path) -> None:
    stream = ImageStream(config(indexed), ("image", "label"))
    straight = take(stream, 30)
    k = 17  # inside the second epoch
    epoch, index = straight[k][0]
    resumed = take(ImageStream(config(indexed), ("image", "label")), 30 - k, position=(epoch, index))
    for (pos, a), (pos_again, b) in zip(straight[k:], resumed):
        assert pos == pos_again and torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_batch_larger_than_a_ranks_share_is_an_error(indexed: Path) -> None:
    with pytest.raises(DistganError, match="rank 1 got no full batch of 26 in an epoch; lower train.batch_size"):
        take(ImageStream(config(indexed), ("image",)), 1, rank=1, world=2, batch=26)


def test_label_outside_num_classes_is_found_when_decoding(indexed: Path) -> None:
    stream = ImageStream(config(indexed, num_classes=40), ("image", "label"))
    with pytest.raises(DistganError, match=r"data.label: label 4\d is outside \[0, 40\)"):
        take(stream, 1)
