"""Draw images from an exported generator (a run's `generator/` folder), without the training config.

    python launch/sample.py --generator runs/x/generator --out grid.png [--n 64] [--seed S]
    python launch/sample.py --generator runs/cgan/generator --out sevens.png --class 7
    python launch/sample.py --generator runs/cgan/generator --out grid.png --grid classes   # row r = class r
    python launch/sample.py --generator runs/p2p/generator --input photos/ --out translated/

`--out` ending in .png writes one grid (for image-to-image: source | generated); any other path is a
folder that gets one PNG per image (for metrics computed by other tools).
Generator inputs follow the batch-key conventions of `distgan.family`: "z", "label", "source".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from distgan.errors import DistganError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", required=True, help="a run's generator/ folder")
    parser.add_argument("--out", required=True, help="grid.png, or a folder for one PNG per image")
    parser.add_argument("--n", type=int, default=64, help="number of images (unconditional and class-conditional)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class", dest="label", type=int, help="class-conditional: draw only this class")
    parser.add_argument(
        "--grid", choices=["classes"], help="class-conditional: one row per class, same noise per column"
    )
    parser.add_argument("--input", type=Path, help="image-to-image: a folder of source images to translate")
    parser.add_argument("--batch", type=int, default=16, help="images per forward pass with --input")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        from distgan.sampling import load_generator

        family, G = load_generator(args.generator, args.device)
        if args.input is not None:
            torch.manual_seed(args.seed)  # generators may keep dropout on when sampling (pix2pix): repeatable
            translate_folder(family, G, args.input, Path(args.out), args.batch)
        else:
            draw(family, G, args)
    except DistganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def draw(family, G, args: argparse.Namespace) -> None:
    """Unconditional or class-conditional samples, as a grid or one PNG per image."""
    from distgan.logging.images import grid_uint8, save_png
    from distgan.sampling import sample

    conditional = "label" in family.columns
    num_classes = family.spec.num_classes or 0
    if "source" in family.columns:
        raise DistganError(f"--generator {args.generator}: an image-to-image generator needs --input FOLDER")
    if (args.label is not None or args.grid) and not conditional:
        raise DistganError(f"--class/--grid: the '{family.name}' generator is not class-conditional")
    if args.label is not None and not 0 <= args.label < num_classes:
        raise DistganError(f"--class {args.label}: must be in [0, {num_classes})")
    if args.n < 1:
        raise DistganError(f"--n {args.n}: must be >= 1")
    n = num_classes * 10 if args.grid == "classes" else args.n
    inputs, images = sample(family, G, n, args.seed)  # conditional default: one class per row
    if conditional and args.grid is None:  # a fixed class, or classes drawn at random
        gen = torch.Generator().manual_seed(args.seed + 1)
        labels = (
            torch.full((n,), args.label) if args.label is not None else torch.randint(num_classes, (n,), generator=gen)
        )
        device = inputs["label"].device
        # n fresh noise vectors: the class-per-row inputs hold C * (n // C) with only n // C distinct ones
        z = torch.randn(n, family.z_dim, generator=torch.Generator().manual_seed(args.seed))
        inputs = {"z": z.to(device), "label": labels.to(device)}
        with torch.no_grad():
            images = family.generate(G, inputs)
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        grid, nrow = family.panel(inputs, images)
        save_png(grid_uint8(grid, nrow), out)
    else:
        write_each(images, [f"{i:05d}.png" for i in range(n)], out)
    print(f"wrote {n} images to {out}")


def translate_folder(family, G, folder: Path, out: Path, batch: int) -> None:
    """Image-to-image: translate every image of `folder`, one output PNG per input (same file name)."""
    from PIL import Image

    from distgan.data.source import IMAGE_SUFFIXES
    from distgan.data.transforms import ImageTransform, to_pil

    if "source" not in family.columns:
        raise DistganError(f"--input: the '{family.name}' generator does not translate images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise DistganError(f"--input {folder}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if out.suffix:
        raise DistganError(f"--out {out}: with --input, give a folder for the translated images")
    spec, device = family.spec, next(G.parameters()).device
    transform = ImageTransform(spec.image_size, spec.channels)
    for start in range(0, len(files), batch):
        chunk = files[start : start + batch]
        source = torch.stack([transform(to_pil(Image.open(f), spec.channels))[0] for f in chunk]).to(device)
        with torch.no_grad():
            images = family.generate(G, {"source": source})
        write_each(images, [f"{f.stem}.png" for f in chunk], out)
    print(f"translated {len(files)} images from {folder} to {out}")


def write_each(images: torch.Tensor, names: list[str], out: Path) -> None:
    from distgan.logging.images import image_uint8, save_png

    for image, name in zip(images, names):
        save_png(image_uint8(image), out / name)


if __name__ == "__main__":
    sys.exit(main())
