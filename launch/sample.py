"""Draw images from an exported generator (a run's `generator/` folder), without the training config.

    python launch/sample.py --generator runs/x/generator --out grid.png [--n 64] [--seed S]
    python launch/sample.py --generator runs/x/generator --out images/ --n 50000   # one PNG per image
    python launch/sample.py --generator runs/cgan/generator --out sevens.png --class 7
    python launch/sample.py --generator runs/cgan/generator --out grid.png --grid classes   # row r = class r
    python launch/sample.py --generator runs/p2p/generator --input photos/ --out translated/

`--out` ending in .png writes one grid (for image-to-image: source | generated); any other path is a
folder that gets one PNG per image (for metrics computed by other tools); it must not already hold PNGs.
Images are generated and written --batch at a time, so memory does not grow with --n.
Generator inputs follow the batch-key conventions of `distgan.family`: "z", "label", "source".
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from distgan.errors import EXIT_BAD_INPUT, DistganError  # noqa: E402

MAX_BATCH = 65536
MAX_GRID_IMAGES = 4096  # one grid PNG; more images go to a folder
MAX_GRID_PIXELS = 2**26  # 8192 x 8192
OTHER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # --out: grids are PNG only
INPUT_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")  # raster only: never hand a file to Ghostscript


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", required=True, help="a run's generator/ folder")
    parser.add_argument("--out", required=True, help="grid.png, or a folder for one PNG per image")
    parser.add_argument("--n", type=int, default=64, help="number of images (unconditional and class-conditional)")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="the trained G (model_raw.safetensors) instead of its EMA (model.safetensors)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class", dest="label", type=int, help="class-conditional: draw only this class")
    parser.add_argument(
        "--grid", choices=["classes"], help="class-conditional: one row per class, same noise per column (--n unused)"
    )
    parser.add_argument("--input", type=Path, help="image-to-image: a folder of source images to translate")
    parser.add_argument("--batch", type=int, default=16, help="images per forward pass (bounds the memory used)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from distgan.sampling import load_generator, resolve_device

        check_numbers(args)
        device = resolve_device(args.device)
        family, G = load_generator(args.generator, device, raw=args.raw)
        if args.input is not None:
            torch.manual_seed(args.seed)  # generators may keep dropout on when sampling (pix2pix): repeatable
            translate_folder(family, G, args)
        else:
            draw(family, G, args)
    except (torch.OutOfMemoryError, MemoryError):
        print(f"error: --batch {args.batch}: out of memory on {args.device}; lower --batch", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as e:
        if "can't allocate memory" not in str(e):  # the CPU allocator's out-of-memory error
            raise
        print(f"error: --batch {args.batch}: out of memory on {args.device}; lower --batch", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # the PNGs already written are complete (each is written, then renamed)
        print(f"error: interrupted; the images written to {args.out} so far are complete", file=sys.stderr)
        return 130
    except DistganError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_status
    return 0


def check_numbers(args: argparse.Namespace) -> None:
    """Options that are impossible whatever the generator."""
    if not 1 <= args.batch <= MAX_BATCH:
        raise DistganError(f"--batch {args.batch}: must be in [1, {MAX_BATCH}]")
    if args.n < 1:
        raise DistganError(f"--n {args.n}: must be >= 1")
    if not 0 <= args.seed < 2**32:
        raise DistganError(f"--seed {args.seed}: must be in [0, {2**32 - 1}]")
    if args.input is not None and (args.label is not None or args.grid):
        raise DistganError("--class/--grid: not used with --input (image-to-image translates each input image)")
    if args.grid and args.label is not None:
        raise DistganError("--grid classes draws every class; leave out --class (or --grid for one class)")


def draw(family, G, args: argparse.Namespace) -> None:
    """Unconditional or class-conditional samples, as a grid or one PNG per image, a batch at a time."""
    from distgan.sampling import draw_batches, draw_inputs, split_inputs

    conditional = "label" in family.columns
    num_classes = family.spec.num_classes or 0
    if "source" in family.columns:
        raise DistganError(f"--generator {args.generator}: an image-to-image generator needs --input FOLDER")
    if (args.label is not None or args.grid) and not conditional:
        raise DistganError(f"--class/--grid: the '{family.name}' generator is not class-conditional")
    if args.label is not None and not 0 <= args.label < num_classes:
        raise DistganError(f"--class {args.label}: must be in [0, {num_classes})")
    n = num_classes * 10 if args.grid == "classes" else args.n
    out, grid = Path(args.out), is_grid(args.out)
    if grid:
        check_grid_size(n, family.spec.image_size)
    prepare_out(out, grid)
    if args.grid == "classes":  # the family's own layout: row r = class r, column j = noise j in every row
        inputs = split_inputs(family.sample_inputs(n, torch.Generator().manual_seed(args.seed)), args.batch)
    else:
        inputs = draw_inputs(family, n, args.seed, args.batch, args.label)
    batches = draw_batches(family, G, inputs)
    if grid:
        write_grid(family, batches, out)
    else:
        width = max(5, len(str(n - 1)))
        write_each(batches, (f"{i:0{width}d}.png" for i in range(n)), out)
    print(f"wrote {n} images to {out}")


def translate_folder(family, G, args: argparse.Namespace) -> None:
    """Image-to-image: translate every image of `--input`, one output PNG per input (same file name)."""
    from distgan.data.source import IMAGE_SUFFIXES
    from distgan.sampling import draw_batches

    folder, out = args.input, Path(args.out)
    if "source" not in family.columns:
        raise DistganError(f"--input: the '{family.name}' generator does not translate images")
    if not folder.is_dir():
        raise DistganError(f"--input {folder}: not a folder; give a folder of source images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DistganError(f"--input {folder}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if is_grid(args.out):
        raise DistganError(f"--out {out}: with --input, give a folder for the translated images")
    if out.resolve() == folder.resolve():
        raise DistganError(f"--out {out}: is the --input folder; the translations would replace the sources")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise DistganError(f"--input: {stems[f.stem].name} and {f.name} would both be written as {f.stem}.png")
        stems[f.stem] = f
    prepare_out(out, grid=False)
    chunks = [files[i : i + args.batch] for i in range(0, len(files), args.batch)]
    sources = ({"source": read_sources(chunk, family.spec)} for chunk in chunks)
    write_each(draw_batches(family, G, sources), (f"{f.stem}.png" for f in files), out)
    print(f"translated {len(files)} images from {folder} to {out}")


def read_sources(files: list[Path], spec) -> torch.Tensor:
    """Decode and transform source images (B, C, H, W); an undecodable file is an error naming it."""
    from PIL import Image

    from distgan.data.transforms import ImageTransform, to_pil

    transform = ImageTransform(spec.image_size, spec.channels)
    images = []
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is an error, not a warning
                with Image.open(f, formats=INPUT_FORMATS) as image:
                    images.append(transform(to_pil(image, spec.channels))[0])
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DistganError(f"--input {f}: cannot be decoded as an image ({e}); remove or replace it") from None
    return torch.stack(images)


def is_grid(out: str) -> bool:
    """`--out` names one grid PNG, else a folder (any other name, or one ending in /).

    Other image suffixes are refused rather than taken as folder names.
    """
    if out.endswith(("/", os.sep)):
        return False
    suffix = Path(out).suffix.lower()
    if suffix in OTHER_IMAGE_SUFFIXES:
        png = Path(out).with_suffix(".png")
        raise DistganError(f"--out {out}: a grid is written as PNG; name it {png}, or give a folder")
    return suffix == ".png"


def check_grid_size(n: int, size: int) -> None:
    cell = size + 2  # make_grid's padding
    if n > MAX_GRID_IMAGES or n * cell * cell > MAX_GRID_PIXELS:
        most = min(MAX_GRID_IMAGES, MAX_GRID_PIXELS // (cell * cell))
        raise DistganError(
            f"--n {n}: too many {size}x{size} images for one grid PNG (at most {most}); "
            "give a folder as --out to write one PNG per image"
        )


def prepare_out(out: Path, grid: bool) -> None:
    """Check `--out` before anything is generated (folders are created on the first write); never mix outputs."""
    if grid and out.is_dir():
        raise DistganError(f"--out {out}: is a folder; give a file name ending in .png for a grid")
    if not grid and out.exists() and not out.is_dir():
        raise DistganError(f"--out {out}: is a file; give a folder for one PNG per image (or a .png for a grid)")
    if not grid and out.is_dir() and any(out.glob("*.png")):
        raise DistganError(f"--out {out}: already holds PNG files; choose a new or empty folder")
    existing = (out.parent if grid else out).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise DistganError(f"--out {out}: cannot be created, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DistganError(f"--out {out}: {existing} is not writable")


def write_grid(family, batches: Iterator[tuple[dict, torch.Tensor]], out: Path) -> None:
    """All batches in one grid (bounded by check_grid_size), laid out by the family's panel."""
    from distgan.logging.images import grid_uint8

    parts = [({k: v.cpu() for k, v in inputs.items()}, images.cpu()) for inputs, images in batches]
    inputs = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
    grid, nrow = family.panel(inputs, torch.cat([p[1] for p in parts]))
    _write(grid_uint8(grid, nrow), out)


def write_each(batches: Iterator[tuple[dict, torch.Tensor]], names: Iterator[str], out: Path) -> None:
    """One PNG per image, written as each batch is generated."""
    from distgan.logging.images import image_uint8

    for _, images in batches:
        for image in images:
            _write(image_uint8(image), out / next(names))


def _write(array, path: Path) -> None:
    from distgan.logging.images import save_png

    try:
        save_png(array, path)
    except OSError as e:  # full disk, read-only folder, ...
        raise DistganError(f"--out: cannot write {path} ({e.strerror or e})") from None


if __name__ == "__main__":
    sys.exit(main())
