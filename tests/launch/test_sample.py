"""`launch/sample.py` with bad input: one `error:` line naming what is wrong, exit 2, nothing written.

Generators are exported in-process from untrained tiny models (no training needed to test the input checks);
most cases call the entry point's `main` in-process, a few run the real command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distgan.config import load_config
from distgan.family import DataSpec
from distgan.registry import get_family
from distgan.sampling import draw_batches, draw_inputs, load_generator
from distgan.train.checkpoint import export_generator, generator_meta
from launch.sample import main, write_each
from tests.conftest import TEST_CONFIGS, sample_py


def _export(folder: Path, config: str, spec: DataSpec | None = None) -> Path:
    cfg = load_config(str(TEST_CONFIGS / f"{config}.yaml"), ["data.path=x"])
    family = get_family(cfg.model.family)(cfg.model, spec or DataSpec(cfg.data.image_size, cfg.data.channels))
    export_generator(family.build_generator(), generator_meta(cfg, family, 0), folder)
    return folder


@pytest.fixture(scope="module")
def gens(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gens")
    return {
        "dcgan": _export(root / "dcgan", "tiny_dcgan"),
        "cgan": _export(root / "cgan", "tiny_cgan", DataSpec(16, 1, 10)),
        "pix2pix": _export(root / "pix2pix", "tiny_pix2pix"),
        "stylegan2": _export(root / "stylegan2", "tiny_stylegan2"),
    }


def _damaged(tmp_path: Path, gens: dict[str, Path], case: str) -> Path:
    """A copy of the dcgan generator folder with one thing wrong."""
    folder = tmp_path / f"gen-{case}"
    shutil.copytree(gens["dcgan"], folder)
    meta_file, meta = folder / "config.json", json.loads((folder / "config.json").read_text())
    if case == "not-json":
        meta_file.write_text("{not json")
    elif case == "binary-json":
        meta_file.write_bytes(bytes(range(256)))
    elif case == "no-family":
        meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "family"}))
    elif case == "list":
        meta_file.write_text("[1, 2]")
    elif case == "unknown-family":
        meta_file.write_text(json.dumps({**meta, "family": "stylegan9"}))
    elif case == "bad-params":
        meta_file.write_text(json.dumps({**meta, "params": {**meta["params"], "ngf": 0}}))
    elif case == "huge-params":
        meta_file.write_text(json.dumps({**meta, "params": {**meta["params"], "ngf": 10**12}}))
    elif case == "bad-spec":
        meta_file.write_text(json.dumps({**meta, "spec": {**meta["spec"], "image_size": 10**6}}))
    elif case == "other-run":
        meta_file.write_text(json.dumps({**meta, "params": {**meta["params"], "ngf": 16}}))
    elif case == "no-weights":
        (folder / "model.safetensors").unlink()
    elif case == "truncated-weights":
        (folder / "model.safetensors").write_bytes((gens["dcgan"] / "model.safetensors").read_bytes()[:200])
    return folder


GENERATOR_CASES = {
    "not-json": "config.json: not valid JSON",
    "binary-json": "config.json: not valid JSON",
    "no-family": "config.json: has no 'family' name",
    "list": "config.json: has no 'family' name",
    "unknown-family": "config.json: model.family: unknown family 'stylegan9'",
    "bad-params": "config.json: model.ngf: must be >= 1, got 0",
    "huge-params": "config.json: describes no buildable generator",
    "bad-spec": "config.json: spec.image_size: must be an integer in [4, 1024]",
    "other-run": "model.safetensors: weights do not fit the generator described by config.json",
    "no-weights": "expected model.safetensors and config.json",
    "truncated-weights": "model.safetensors: cannot read the weights",
}


def _one_error_line(capsys, expected: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    return err[0]


@pytest.mark.parametrize("case", GENERATOR_CASES)
def test_damaged_generator_folder(tmp_path: Path, gens: dict[str, Path], capsys, case: str) -> None:
    folder = _damaged(tmp_path, gens, case)
    assert main(["--generator", str(folder), "--out", str(tmp_path / "grid.png")]) == 2
    _one_error_line(capsys, GENERATOR_CASES[case])
    assert not (tmp_path / "grid.png").exists()


def test_run_folder_instead_of_generator_folder_says_which(tmp_path: Path, gens: dict[str, Path], capsys) -> None:
    shutil.copytree(gens["dcgan"], tmp_path / "run" / "generator")
    assert main(["--generator", str(tmp_path / "run"), "--out", str(tmp_path / "g.png")]) == 2
    _one_error_line(capsys, f"did you mean {tmp_path / 'run' / 'generator'}?")


def _inputs(tmp_path: Path) -> Path:
    """A folder of source images with one bad file in it (set by the test)."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / "a.png")
    return folder


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda f: (f / "b.png").write_text("not an image"), "b.png: cannot be decoded as an image"),
        (lambda f: (f / "b.png").write_bytes((f / "a.png").read_bytes()[:60]), "b.png: cannot be decoded as an image"),
        (lambda f: (f / "b.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n"), "b.jpg: cannot be decoded as an image"),
        (lambda f: Image.new("L", (40, 40)).save(f / "b.png"), "b.png: cannot be decoded as an image"),
        (lambda f: Image.new("RGB", (8, 8)).save(f / "a.jpg"), "a.jpg and a.png would both be written as a.png"),
    ],
    ids=["text", "truncated", "postscript", "decompression-bomb", "same-stem"],
)
def test_bad_input_image_is_named(tmp_path: Path, gens: dict[str, Path], capsys, make, expected: str) -> None:
    folder = _inputs(tmp_path)
    make(folder)
    Image.MAX_IMAGE_PIXELS, limit = 1100, Image.MAX_IMAGE_PIXELS  # 40x40: over the limit (Pillow warns): an error
    try:
        status = main(["--generator", str(gens["pix2pix"]), "--input", str(folder), "--out", str(tmp_path / "t")])
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    assert status == 2
    _one_error_line(capsys, expected)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--batch", "0"], "--batch 0: must be in [1, 65536]"),
        (["--n", "-5"], "--n -5: must be >= 1"),
        (["--n", "0"], "--n 0: must be >= 1"),
        (["--seed", "-1"], "--seed -1: must be in [0, 4294967295]"),
        (["--device", "gpu"], "--device gpu: not a device name"),
        (["--device", "meta"], "--device meta: images cannot be drawn there"),
        (["--n", "100000000"], "--n 100000000: too many 16x16 images for one grid PNG (at most 4096)"),
        (["--out", "OUT/grid.jpg"], "grid.jpg: a grid is written as PNG"),
        (["--out", "OUT/dir.png"], "OUT/dir.png: is a folder; give a file name ending in .png"),
        (["--out", "OUT/file.txt"], "OUT/file.txt: is a file; give a folder"),
        (["--out", "OUT/file.txt/x.png"], "cannot be created"),
        (["--out", "OUT/full"], "OUT/full: already holds PNG files"),
        (["--class", "3"], "--class/--grid: the 'dcgan' generator is not class-conditional"),
        (["--input", "OUT"], "--input: the 'dcgan' generator does not translate images"),
        (["--truncation", "0.7"], "--truncation: the 'dcgan' generator has no style space (stylegan2 has)"),
        (["--truncation", "nan"], "--truncation nan: must be in [0, 2]"),
        (["--grid", "style-mix"], "--grid style-mix: the 'dcgan' generator has no style space"),
        (["--interpolate", "1"], "--interpolate 1: must be in [2, 1000]"),
        (["--interpolate", "4", "--seeds", "3"], "--seeds 3: a walk needs at least 2 seeds"),
        (["--interpolate", "4", "--seeds", "a,b"], "--seeds a,b: give seeds as 0,5,9 or 0-3"),
        (["--interpolate", "4", "--seeds", "0-99"], "--seeds 0-99: give 1 to 64 seeds"),
        (["--interpolate", "4", "--out", "OUT/walk.mp4"], "videos are not written (no ffmpeg dependency)"),
        (["--interpolate", "4", "--grid", "classes"], "--interpolate: not used with --input or --grid"),
        (["--seeds", "1,2"], "--seeds: used only with --interpolate or --grid style-mix"),
        (["--out", "OUT/walk.gif"], "--interpolate writes an animated .gif"),
    ],
)
def test_bad_option(tmp_path: Path, gens: dict[str, Path], capsys, args: list[str], expected: str) -> None:
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "file.txt").write_text("keep me")
    (tmp_path / "full").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "full" / "00000.png")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "grid.png")]
    assert main(["--generator", str(gens["dcgan"]), *out, *args]) == 2
    _one_error_line(capsys, expected.replace("OUT", str(tmp_path)))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert (tmp_path / "file.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--class", "10"], "--class 10: must be in [0, 10)"),
        (["--grid", "classes", "--class", "3"], "--grid classes draws every class; leave out --class"),
    ],
)
def test_bad_class_option(tmp_path: Path, gens: dict[str, Path], capsys, args: list[str], expected: str) -> None:
    assert main(["--generator", str(gens["cgan"]), "--out", str(tmp_path / "g.png"), *args]) == 2
    _one_error_line(capsys, expected)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--grid", "style-mix", "--mix-layers", "0-8"], "--mix-layers 0-8: this generator has styles 0-5"),
        (["--grid", "style-mix", "--mix-layers", "2-1"], "--mix-layers 2-1: this generator has styles 0-5"),
        (["--grid", "style-mix", "--mix-layers", "coarse"], "--mix-layers coarse: give the styles as A-B"),
        (["--grid", "style-mix", "--out", "OUT/mix/"], "--grid style-mix writes one grid"),
        (["--interpolate", "3", "--mix-layers", "0-1"], "--mix-seeds/--mix-layers: used only with --grid style-mix"),
        (["--truncation", "2.5"], "--truncation 2.5: must be in [0, 2]"),
    ],
)
def test_bad_style_option(tmp_path: Path, gens: dict[str, Path], capsys, args: list[str], expected: str) -> None:
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "g.png")]
    assert main(["--generator", str(gens["stylegan2"]), *out, *args]) == 2
    _one_error_line(capsys, expected.replace("OUT", str(tmp_path)))
    assert not any(tmp_path.iterdir())


def _pngs(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(f)).astype(int) for f in sorted(folder.glob("*.png"))]


def _cells(grid: Path, size: int, cols: int) -> list[np.ndarray]:
    """The images of a grid PNG (make_grid's layout: 2 pixels of padding), row-major; first channel."""
    pixels = np.asarray(Image.open(grid)).astype(int)[..., 0]
    rows, step = (pixels.shape[0] - 2) // (size + 2), size + 2
    return [
        pixels[2 + r * step : 2 + r * step + size, 2 + c * step :][:, :size] for r in range(rows) for c in range(cols)
    ]


def test_truncation(tmp_path: Path, gens: dict[str, Path]) -> None:
    """psi 1 is no truncation; psi 0 draws every image at the tracked average w (one image n times)."""

    def draw(name: str, *extra: str) -> list[np.ndarray]:
        assert main(["--generator", str(gens["stylegan2"]), "--out", f"{tmp_path / name}/", "--n", "4", *extra]) == 0
        return _pngs(tmp_path / name)

    plain, one, zero, half = (
        draw("plain"),
        draw("one", "--truncation", "1"),
        draw("zero", "--truncation", "0"),
        draw("half", "--truncation", "0.5"),
    )
    assert all(np.array_equal(a, b) for a, b in zip(plain, one))
    assert all(np.array_equal(zero[0], z) for z in zero[1:]) and not np.array_equal(plain[0], plain[1])
    assert all(np.abs(h - p).mean() < np.abs(z - p).mean() for h, p, z in zip(half, plain, zero))  # in between


@pytest.mark.parametrize("name", ["dcgan", "stylegan2", "cgan"])
def test_walk_starts_and_ends_at_its_seeds(tmp_path: Path, gens: dict[str, Path], name: str) -> None:
    """Frame 0 is `--seed 3`'s image, the last frame `--seed 8`'s (slerp in z; StyleGAN2: lerp in w); a .gif has
    each segment's frames with the shared keyframes once; a .png has one row per segment."""
    gen = ["--generator", str(gens[name])]
    for seed in (3, 8):
        assert (
            main(
                [*gen, "--out", f"{tmp_path}/seed{seed}/", "--n", "1", "--seed", str(seed)]
                + (["--class", "0"] if name == "cgan" else [])
            )
            == 0
        )
    assert main([*gen, "--out", f"{tmp_path}/walk/", "--interpolate", "5", "--seeds", "3,8", "--batch", "2"]) == 0
    frames = _pngs(tmp_path / "walk")
    assert len(frames) == 5
    assert np.abs(frames[0] - _pngs(tmp_path / "seed3")[0]).max() <= 1
    assert np.abs(frames[-1] - _pngs(tmp_path / "seed8")[0]).max() <= 1
    assert len({f.tobytes() for f in frames}) == 5  # it moves

    assert main([*gen, "--out", str(tmp_path / "walk.gif"), "--interpolate", "4", "--seeds", "0-2"]) == 0
    with Image.open(tmp_path / "walk.gif") as gif:
        assert gif.n_frames == 2 * 4 - 1 and gif.info["loop"] == 0
    assert main([*gen, "--out", str(tmp_path / "walk.png"), "--interpolate", "4", "--seeds", "0-2"]) == 0
    size = 16
    assert Image.open(tmp_path / "walk.png").size == (4 * (size + 2) + 2, 2 * (size + 2) + 2)


def test_style_mixing_grid(tmp_path: Path, gens: dict[str, Path]) -> None:
    """Top row: the columns' images; left column: the rows'; a cell takes the columns' styles in --mix-layers:
    all of them gives the column's image; a cell is the synthesis of the row's ws with those layers replaced."""
    gen, size = ["--generator", str(gens["stylegan2"])], 16
    for seed in (0, 1, 5, 6, 7):
        assert main([*gen, "--out", f"{tmp_path}/s{seed}/", "--n", "1", "--seed", str(seed)]) == 0
    single = {
        seed: _pngs(tmp_path / f"s{seed}")[0][..., 0]
        if _pngs(tmp_path / f"s{seed}")[0].ndim == 3
        else _pngs(tmp_path / f"s{seed}")[0]
        for seed in (0, 1, 5, 6, 7)
    }
    mix = ["--grid", "style-mix", "--seeds", "0,1", "--mix-seeds", "5-7"]
    assert main([*gen, "--out", str(tmp_path / "all.png"), *mix, "--mix-layers", "0-5"]) == 0
    cells = _cells(tmp_path / "all.png", size, 4)
    assert len(cells) == 3 * 4 and not cells[0].any()  # the corner is blank
    for c, seed in enumerate((5, 6, 7), start=1):
        assert np.abs(cells[c] - single[seed]).max() <= 1  # top row
        for r in (1, 2):
            assert np.abs(cells[4 * r + c] - single[seed]).max() <= 1  # every style from the column
    for r, seed in ((1, 0), (2, 1)):
        assert np.abs(cells[4 * r] - single[seed]).max() <= 1  # left column

    assert main([*gen, "--out", str(tmp_path / "fine.png"), *mix, "--mix-layers", "4-5"]) == 0
    fine = _cells(tmp_path / "fine.png", size, 4)
    family, G = load_generator(gens["stylegan2"])
    z = {seed: next(draw_inputs(family, 1, seed, 1))["z"] for seed in (0, 1, 5, 6, 7)}
    c = torch.zeros(1, 0)
    for r, row in ((1, 0), (2, 1)):  # the synthesis of row's ws with ws[4:6] from the column, by hand
        for col_index, col in enumerate((5, 6, 7), start=1):
            ws = G.mapping(z[row], c).clone()
            ws[:, 4:6] = G.mapping(z[col], c)[:, 4:6]
            expected = ((G.synthesis(ws, noise_mode="const")[0, 0].clamp(-1, 1) + 1) * 127.5).round().int().numpy()
            assert np.abs(fine[4 * r + col_index] - expected).max() <= 1


def test_translation_never_overwrites_its_sources(tmp_path: Path, gens: dict[str, Path], capsys) -> None:
    folder = _inputs(tmp_path)
    source = (folder / "a.png").read_bytes()
    assert main(["--generator", str(gens["pix2pix"]), "--input", str(folder), "--out", str(folder)]) == 2
    _one_error_line(capsys, "is the --input folder")
    assert (folder / "a.png").read_bytes() == source


def test_command_line_errors_are_one_line(tmp_path: Path, gens: dict[str, Path]) -> None:
    for args, expected in [
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--batch", "0"], "error: --"),  # no GPU
        (["--generator", str(tmp_path / "nowhere")], "expected model.safetensors and config.json"),
    ]:
        generator = [] if "--generator" in args else ["--generator", str(gens["dcgan"])]
        result = sample_py(*generator, "--out", str(tmp_path / "g.png"), *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
        assert expected in result.stderr
    assert not (tmp_path / "g.png").exists()


def test_images_are_generated_and_written_a_batch_at_a_time(tmp_path: Path, gens: dict[str, Path]) -> None:
    """Memory is bounded by --batch: each batch is written before the next one is drawn."""
    family, G = load_generator(gens["cgan"])
    batches = list(draw_inputs(family, 10, seed=3, batch=4))
    assert [b["z"].shape[0] for b in batches] == [4, 4, 2]
    # image i's inputs do not depend on the batch size
    one_batch = next(draw_inputs(family, 10, seed=3, batch=10))
    for key in ("z", "label"):
        assert torch.equal(torch.cat([b[key] for b in batches]), one_batch[key])

    out, seen = tmp_path / "each", []

    def watched():  # the next batch is drawn only after the previous one is on disk
        for inputs, images in draw_batches(family, G, iter(batches)):
            seen.append(len(list(out.glob("*.png"))) if out.exists() else 0)
            yield inputs, images

    write_each(watched(), (f"{i:05d}.png" for i in range(10)), out)
    assert seen == [0, 4, 8] and len(list(out.glob("*.png"))) == 10


def test_a_folder_of_images_streams(tmp_path: Path, gens: dict[str, Path], capsys) -> None:
    out = tmp_path / "many"
    assert main(["--generator", str(gens["cgan"]), "--out", f"{out}/", "--n", "7", "--batch", "2", "--class", "4"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(7)]
    assert "wrote 7 images" in capsys.readouterr().out
