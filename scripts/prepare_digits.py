"""Write scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, 10 classes) as parquet shards.

This is the offline demo's data: it ships with a pinned dependency, needs no network, and is read by
training through the same `datasets` streaming path as a hub dataset.
    python scripts/prepare_digits.py [--out data/digits] [--shards 4]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import datasets
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

REPO = Path(__file__).resolve().parent.parent


def write_parquet_shards(ds: datasets.Dataset, out: Path, split: str, shards: int) -> None:
    """`{split}-0000i-of-0000n.parquet`, the layout of hub parquet exports (one split per file prefix)."""
    out.mkdir(parents=True, exist_ok=True)
    for i in range(shards):
        tmp = out / f".{split}-{i:05d}-of-{shards:05d}.parquet.tmp"
        ds.shard(shards, i, contiguous=True).to_parquet(str(tmp))
        os.replace(tmp, out / f"{split}-{i:05d}-of-{shards:05d}.parquet")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "data" / "digits")
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    digits = load_digits()
    images = [Image.fromarray(np.round(x * 255 / 16).astype(np.uint8), mode="L") for x in digits.images]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    ds = datasets.Dataset.from_dict({"image": images, "label": digits.target.tolist()}, features=features)
    write_parquet_shards(ds, args.out, "train", args.shards)
    print(f"wrote {len(ds)} digits (8x8, 10 classes) to {args.out} in {args.shards} parquet shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
