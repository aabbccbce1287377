"""Draw images from an exported generator: `python launch/sample.py --generator runs/x/generator --out g.png`.

`--out` ending in .png writes one grid; any other path is a folder that gets one PNG per image (for
metrics computed by other tools).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from distgan.errors import DistganError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--generator", required=True, help="a run's generator/ folder")
    parser.add_argument("--out", required=True, help="grid.png, or a folder for one PNG per image")
    parser.add_argument("--n", type=int, default=64, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        from distgan.logging.images import grid_uint8, image_uint8, save_png
        from distgan.sampling import load_generator, sample

        if args.n < 1:
            raise DistganError(f"--n {args.n}: must be >= 1")
        family, G = load_generator(args.generator, args.device)
        inputs, images = sample(family, G, args.n, args.seed)
        out = Path(args.out)
        if out.suffix.lower() == ".png":
            save_png(grid_uint8(*family.panel(inputs, images)), out)
        else:
            for i, image in enumerate(images):
                save_png(image_uint8(image), out / f"{i:05d}.png")
        print(f"wrote {args.n} images to {out}")
    except DistganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
