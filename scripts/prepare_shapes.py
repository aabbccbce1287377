"""Write a synthetic paired dataset for pix2pix: outlines of shapes (A) -> the same shapes filled (B).

Each example is one A|B side-by-side RGB image (the classic facades / edges2shoes layout), size x 2*size:
  A (left)  the white 1-pixel outline of a random circle, square or triangle on black;
  B (right) the same shape filled, in a colour that names its kind (circle red, square green, triangle blue).
Position, size and rotation are random, so the generator has to find the inside of the outline and
tell the kinds apart: a small but real image-to-image task that trains in seconds on a CPU. Shards are
written like a hub parquet export ({split}-0000i-of-0000n.parquet), with a `label` column (the kind).

    python scripts/prepare_shapes.py [--out data/shapes] [--n 2000] [--size 32] [--shards 1] [--seed 0]
    python scripts/prepare_shapes.py --out data/shapes --split test --n 200 --seed 1   # held-out split
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import datasets
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_digits import REPO, write_parquet_shards  # noqa: E402

KINDS = ("circle", "square", "triangle")
FILL = {"circle": (230, 60, 60), "square": (60, 200, 80), "triangle": (70, 110, 240)}  # B's colour per kind
OUTLINE = (255, 255, 255)  # A's colour


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a square or triangle with circumradius r, centred at (cx, cy), rotated by angle."""
    corners = 4 if kind == "square" else 3
    return [
        (cx + r * math.cos(angle + 2 * math.pi * k / corners), cy + r * math.sin(angle + 2 * math.pi * k / corners))
        for k in range(corners)
    ]


def draw_pair(kind: str, size: int, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(outline, filled): one random shape of `kind` drawn twice, as size x size RGB images."""
    r = rng.uniform(0.2, 0.42) * size  # circumradius: big enough to have an inside at 32 px
    cx, cy = (rng.uniform(r, size - 1 - r) for _ in range(2))  # fully inside the image
    a = Image.new("RGB", (size, size))
    b = Image.new("RGB", (size, size))
    draw_a, draw_b = ImageDraw.Draw(a), ImageDraw.Draw(b)
    if kind == "circle":
        box = (cx - r, cy - r, cx + r, cy + r)
        draw_b.ellipse(box, fill=FILL[kind])
        draw_a.ellipse(box, outline=OUTLINE, width=1)
    else:
        points = _polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi))
        draw_b.polygon(points, fill=FILL[kind])
        draw_a.polygon(points, outline=OUTLINE, width=1)
    return a, b


def make_dataset(n: int, size: int, seed: int) -> datasets.Dataset:
    """n A|B examples (size x 2*size RGB) with their kind as a ClassLabel."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        label = int(rng.integers(len(KINDS)))
        a, b = draw_pair(KINDS[label], size, rng)
        pair = Image.new("RGB", (2 * size, size))
        pair.paste(a, (0, 0))
        pair.paste(b, (size, 0))
        images.append(pair)
        labels.append(label)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(KINDS))})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "data" / "shapes")
    parser.add_argument("--n", type=int, default=2000, help="number of examples")
    parser.add_argument("--size", type=int, default=32, help="side of A and of B (the pair is size x 2*size)")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="use another seed for a held-out split")
    parser.add_argument("--split", default="train", help="file prefix, i.e. the split name (train, test)")
    args = parser.parse_args(argv)
    if args.n < args.shards or args.size < 8 or args.shards < 1:
        parser.error("need --n >= --shards >= 1 and --size >= 8")
    ds = make_dataset(args.n, args.size, args.seed)
    write_parquet_shards(ds, args.out, args.split, args.shards)
    print(
        f"wrote {args.n} {args.split} pairs (outline | filled, {args.size}x{args.size} each) "
        f"to {args.out} in {args.shards} parquet shards"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
