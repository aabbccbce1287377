"""Shared data for the data tests."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from PIL import Image


def write_indexed(out: Path, n: int, size: int, shards: int = 3) -> Path:
    """n grayscale images whose pixels and label are their index, in `shards` parquet files."""
    images = [Image.fromarray(np.full((size, size), i, np.uint8), mode="L") for i in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=n)})
    ds = datasets.Dataset.from_dict({"image": images, "label": list(range(n))}, features=features)
    for i in range(shards):
        ds.shard(shards, i, contiguous=True).to_parquet(str(out / f"train-{i:05d}-of-{shards:05d}.parquet"))
    return out
