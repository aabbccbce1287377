"""Draw images from an exported generator (a run's `generator/` folder), without the training config.

    python launch/sample.py --generator runs/x/generator --out grid.png [--n 64] [--seed S]
    python launch/sample.py --generator runs/x/generator --out images/ --n 50000   # one PNG per image
    python launch/sample.py --generator runs/cgan/generator --out sevens.png --class 7
    python launch/sample.py --generator runs/cgan/generator --out grid.png --grid classes   # row r = class r
    python launch/sample.py --generator runs/p2p/generator --input photos/ --out translated/
    python launch/sample.py --generator runs/sg2/generator --out grid.png --truncation 0.7
    python launch/sample.py --generator runs/sg2/generator --out walk.gif --interpolate 30 --seeds 0,7,3
    python launch/sample.py --generator runs/sg2/generator --out mix.png --grid style-mix --mix-layers 0-3

`--out` ending in .png writes one grid (for image-to-image: source | generated); any other path is a
folder that gets one PNG per image (for metrics computed by other tools); it must not already hold PNGs.
`--interpolate N` walks from each of `--seeds` to the next in N steps (slerp in z; StyleGAN2: lerp in w),
one row per segment in a .png grid, one frame per step in an animated .gif, or one PNG per frame in a folder.
`--grid style-mix` (StyleGAN2): the top row shows `--mix-seeds`' images, the left column `--seeds`' images,
and cell (r, c) is row r's image with the styles of `--mix-layers` taken from column c.
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
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".webm", ".mkv")  # would need ffmpeg: refused, .gif suggested
MAX_SEEDS = 64  # keyframes / style-mixing rows or columns
MAX_FRAMES = 1000  # --interpolate steps per segment
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
        "--grid",
        choices=["classes", "style-mix"],
        help="classes: one row per class, same noise per column (class-conditional; --n unused); "
        "style-mix: a style-mixing grid of --seeds x --mix-seeds (StyleGAN2)",
    )
    parser.add_argument("--truncation", type=float, help="StyleGAN2: truncation psi (1: none, 0: the average image)")
    parser.add_argument("--interpolate", type=int, metavar="N", help="a latent walk through --seeds in N steps each")
    parser.add_argument(
        "--seeds",
        help="keyframes of --interpolate (default: --seed and --seed+1) or rows of --grid style-mix "
        "(default: 4 from --seed), as 0,5,9 or 0-3",
    )
    parser.add_argument("--mix-seeds", help="columns of --grid style-mix (default: the 4 seeds after the rows')")
    parser.add_argument(
        "--mix-layers", help="the styles the columns give, as A-B (0-based, inclusive; default: the coarse half)"
    )
    parser.add_argument("--fps", type=int, default=12, help="frames per second of an animated .gif")
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
        check_styles(family, args)
        if args.input is not None:
            torch.manual_seed(args.seed)  # generators may keep dropout on when sampling (pix2pix): repeatable
            translate_folder(family, G, args)
        elif args.interpolate is not None:
            walk(family, G, args)
        elif args.grid == "style-mix":
            style_mix(family, G, args)
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
    if args.grid == "classes" and args.label is not None:
        raise DistganError("--grid classes draws every class; leave out --class (or --grid for one class)")
    if args.truncation is not None and not 0 <= args.truncation <= 2:  # also refuses nan
        raise DistganError(f"--truncation {args.truncation}: must be in [0, 2] (1: no truncation)")
    if args.interpolate is not None and not 2 <= args.interpolate <= MAX_FRAMES:
        raise DistganError(f"--interpolate {args.interpolate}: must be in [2, {MAX_FRAMES}] steps per segment")
    if args.interpolate is not None and (args.input is not None or args.grid):
        raise DistganError("--interpolate: not used with --input or --grid")
    if not 1 <= args.fps <= 100:
        raise DistganError(f"--fps {args.fps}: must be in [1, 100]")
    for name in ("seeds", "mix_seeds", "mix_layers"):
        if getattr(args, name) is not None and args.interpolate is None and args.grid != "style-mix":
            flag = "--" + name.replace("_", "-")
            raise DistganError(f"{flag}: used only with --interpolate or --grid style-mix")
    if args.interpolate is not None and (args.mix_seeds or args.mix_layers):
        raise DistganError("--mix-seeds/--mix-layers: used only with --grid style-mix")


def check_styles(family, args: argparse.Namespace) -> None:
    """Options that need a generator with a style space (StyleGAN2), or latent noise at all."""
    for used, flag in ((args.truncation is not None, "--truncation"), (args.grid == "style-mix", "--grid style-mix")):
        if used and not family.num_styles():
            raise DistganError(f"{flag}: the '{family.name}' generator has no style space (stylegan2 has)")
    if args.interpolate is not None and not family.z_dim:
        raise DistganError(f"--interpolate: the '{family.name}' generator draws no latent noise to walk through")


def parse_seeds(text: str, flag: str) -> list[int]:
    """'0,5,9' or '0-3' (inclusive) or both ('0-3,7') -> seeds, each in [0, 2**32)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            seeds += list(range(int(first), int(last or first) + 1))
    except ValueError:
        raise DistganError(f"{flag} {text}: give seeds as 0,5,9 or 0-3") from None
    if not seeds or len(seeds) > MAX_SEEDS:
        raise DistganError(f"{flag} {text}: give 1 to {MAX_SEEDS} seeds")
    if not all(0 <= s < 2**32 for s in seeds):
        raise DistganError(f"{flag} {text}: seeds must be in [0, {2**32 - 1}]")
    return seeds


def key_inputs(family, seeds: list[int], label: int | None) -> dict[str, torch.Tensor]:
    """One row of inputs per seed: seed s's row is image 0 of `--seed s` (the same noise and class)."""
    from distgan.sampling import draw_inputs

    rows = [next(draw_inputs(family, 1, s, 1, label)) for s in seeds]
    return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}


def walk(family, G, args: argparse.Namespace) -> None:
    """A latent walk through the keyframes `--seeds`, `--interpolate` steps per segment (both ends included)."""
    from distgan.sampling import draw_batches, split_inputs

    seeds = parse_seeds(args.seeds, "--seeds") if args.seeds else [args.seed, args.seed + 1]
    if len(seeds) < 2:
        raise DistganError(f"--seeds {args.seeds}: a walk needs at least 2 seeds")
    label = class_for_walk(family, args)
    out, steps = Path(args.out), args.interpolate
    kind = "gif" if out.suffix.lower() == ".gif" else ("grid" if is_grid(args.out) else "folder")
    n = (len(seeds) - 1) * steps
    if kind != "folder":
        check_grid_size(n, family.spec.image_size, "grid PNG" if kind == "grid" else "animated GIF")
    prepare_out(out, kind != "folder")
    device = next(G.parameters()).device
    keys = {k: v.to(device) for k, v in key_inputs(family, seeds, label).items()} | psi_input(args)
    with torch.no_grad():
        inputs = family.walk_inputs(G, keys, torch.linspace(0, 1, steps))
    batches = draw_batches(family, G, split_inputs(inputs, args.batch))
    if kind == "folder":
        width = max(5, len(str(n - 1)))
        write_each(batches, (f"{i:0{width}d}.png" for i in range(n)), out)
    else:
        from distgan.logging.images import grid_uint8, image_uint8

        frames = torch.cat([images.cpu() for _, images in batches])
        if kind == "grid":
            _write(grid_uint8(frames, steps), out)
        else:  # each segment ends where the next begins: show that frame once
            keep = [i for i in range(n) if i % steps != steps - 1 or i == n - 1]
            _write([image_uint8(frames[i]) for i in keep], out, fps=args.fps)
    print(f"wrote a walk through seeds {','.join(map(str, seeds))} ({steps} steps each) to {out}")


def class_for_walk(family, args: argparse.Namespace) -> int | None:
    """A class-conditional walk keeps one class (`--class`, default 0): the walk is through noise only."""
    if "label" not in family.columns:
        if args.label is not None:
            raise DistganError(f"--class: the '{family.name}' generator is not class-conditional")
        return None
    label = 0 if args.label is None else args.label
    if not 0 <= label < (family.spec.num_classes or 0):
        raise DistganError(f"--class {label}: must be in [0, {family.spec.num_classes})")
    return label


def style_mix(family, G, args: argparse.Namespace) -> None:
    """StyleGAN's style-mixing figure: columns' images on top, rows' on the left, mixes in between."""
    from distgan.logging.images import grid_uint8
    from distgan.sampling import draw_batches, split_inputs

    rows = parse_seeds(args.seeds, "--seeds") if args.seeds else list(range(args.seed, args.seed + 4))
    cols = parse_seeds(args.mix_seeds, "--mix-seeds") if args.mix_seeds else [max(rows) + 1 + i for i in range(4)]
    layers = parse_layers(args.mix_layers, family.num_styles())
    label = class_for_walk(family, args)
    out = Path(args.out)
    if not is_grid(args.out):
        raise DistganError(f"--out {out}: --grid style-mix writes one grid; give a file name ending in .png")
    check_grid_size((len(rows) + 1) * (len(cols) + 1), family.spec.image_size)
    prepare_out(out, grid=True)
    device, psi = next(G.parameters()).device, psi_input(args)
    row_in, col_in = ({k: v.to(device) for k, v in key_inputs(family, seeds, label).items()} for seeds in (rows, cols))

    def images(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([x.cpu() for _, x in draw_batches(family, G, split_inputs(inputs, args.batch))])

    with torch.no_grad():
        mixed = images(family.style_mix_inputs(G, row_in, col_in, layers, psi=args.truncation or 1.0))
    top, left = images(col_in | psi), images(row_in | psi)  # on the CPU, as images() returns them
    blank = -torch.ones_like(top[:1])  # black, as the padding
    cells = [torch.cat([blank, top])]
    for r in range(len(rows)):
        cells.append(torch.cat([left[r : r + 1], mixed[r * len(cols) : (r + 1) * len(cols)]]))
    _write(grid_uint8(torch.cat(cells), len(cols) + 1), out)
    print(f"wrote a style-mixing grid ({len(rows)} x {len(cols)}, styles {layers.start}-{layers.stop - 1}) to {out}")


def parse_layers(text: str | None, num_styles: int) -> range:
    """'A-B' (inclusive) or 'A' within the generator's styles; default: the coarse half (0 .. n/2 - 1)."""
    if text is None:
        return range(0, max(1, num_styles // 2))
    first, _, last = text.partition("-")
    try:
        layers = range(int(first), int(last or first) + 1)
    except ValueError:
        raise DistganError(f"--mix-layers {text}: give the styles as A-B, e.g. 0-3") from None
    if not layers or layers.start < 0 or layers.stop > num_styles:
        raise DistganError(f"--mix-layers {text}: this generator has styles 0-{num_styles - 1}; give A-B within them")
    return layers


def psi_input(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """The truncation input `generate` reads (nothing without --truncation)."""
    return {} if args.truncation is None else {"truncation_psi": torch.tensor(args.truncation)}


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
    batches = draw_batches(family, G, (batch | psi_input(args) for batch in inputs))
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
        animation = "; --interpolate writes an animated .gif" if suffix == ".gif" else ""
        raise DistganError(f"--out {out}: a grid is written as PNG; name it {png}, or give a folder{animation}")
    if suffix in VIDEO_SUFFIXES:
        gif = Path(out).with_suffix(".gif")
        raise DistganError(f"--out {out}: videos are not written (no ffmpeg dependency); use {gif} with --interpolate")
    return suffix == ".png"


def check_grid_size(n: int, size: int, what: str = "grid PNG") -> None:
    cell = size + 2  # make_grid's padding
    if n > MAX_GRID_IMAGES or n * cell * cell > MAX_GRID_PIXELS:
        most = min(MAX_GRID_IMAGES, MAX_GRID_PIXELS // (cell * cell))
        raise DistganError(
            f"--n {n}: too many {size}x{size} images for one {what} (at most {most}); "
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


def _write(array, path: Path, fps: int | None = None) -> None:
    """One PNG, or (a list of frames and `fps`) an animated GIF."""
    from distgan.logging.images import save_gif, save_png

    try:
        save_png(array, path) if fps is None else save_gif(array, path, fps)
    except OSError as e:  # full disk, read-only folder, ...
        raise DistganError(f"--out: cannot write {path} ({e.strerror or e})") from None


if __name__ == "__main__":
    sys.exit(main())
