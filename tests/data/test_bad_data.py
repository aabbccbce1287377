"""Bad data read in-process: one line naming the file (or parquet file and row) and column, refused from the
schema where it can be, decoded only as allow-listed raster formats. End-to-end runs: tests/launch/test_bad_data.py."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from distgan.config import DataConfig
from distgan.data import ImageStream
from distgan.errors import DistganError


def good_pngs(folder: Path, n: int = 12) -> Path:
    """n random 16x16 grayscale PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels (with almost no data): what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto 16 16 lineto stroke\nshowpage\n"


def labelled_parquet(folder: Path, bad_row: int | None = 5) -> Path:
    """2 shards of 12 labelled images; row `bad_row` of the second (returned) holds bytes that are no image."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)) for _ in range(24)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})
    ds = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(24)]}, features=features)
    for i in range(2):
        ds.shard(2, i, contiguous=True).to_parquet(str(folder / f"train-{i:05d}-of-00002.parquet"))
    bad = folder / "train-00001-of-00002.parquet"
    if bad_row is None:
        return bad
    table = pq.read_table(bad)
    rows = table.to_pylist()
    rows[bad_row]["image"] = {"bytes": b"these bytes are not an image", "path": None}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), bad)  # the schema keeps the features
    return bad


def read_all(path: Path, columns: tuple[str, ...] = ("image",), workers: int = 0, **kw) -> None:
    """Without workers the split is decoded into memory first (data.cache_mb); with workers it streams."""
    kw.setdefault("cache_mb", 0 if workers else DataConfig.cache_mb)
    cfg = DataConfig(path=str(path), image_size=16, channels=1, shuffle_buffer=0, num_workers=workers, **kw)
    for _, _ in zip(range(20), ImageStream(cfg, columns).batches(4, seed=0, rank=0, world_size=1)):
        pass


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("x.png", b"a text file, not an image", "not an image in an allowed format (PNG, JPEG"),
        ("e.png", EPS, "not an image in an allowed format (PNG, JPEG"),  # never handed to Ghostscript
        ("t.png", None, "cannot decode the image (OSError: image file is truncated"),
        ("bomb.png", png_header(20000, 20000), "larger than Pillow's decompression-bomb limit of 89478485 pixels"),
    ],
    ids=["text", "eps", "truncated", "bomb"],
)
def test_bad_image_file_is_one_line_naming_the_file(tmp_path: Path, name: str, content: bytes | None, reason: str):
    folder = good_pngs(tmp_path / "images")
    if content is None:  # the first half of a real PNG
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)).save(folder / name)
        content = (folder / name).read_bytes()[:300]
    (folder / name).write_bytes(content)
    if name == "e.png":
        assert Image.open(folder / name).format == "EPS"  # what Pillow would make of it without the allow-list
    with pytest.raises(DistganError) as info:
        read_all(folder)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"data.path={folder}: file {folder / name}, column 'image': {reason}")
    assert message.endswith("fix or remove it (a bad example stops the run)")


def test_image_over_the_bomb_limit_but_under_twice_it_is_an_error_too(tmp_path: Path, monkeypatch) -> None:
    """Pillow only warns between MAX_IMAGE_PIXELS and twice it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # 16 x 16 = 256 pixels
    with pytest.raises(DistganError, match=r"file .*00\.png, column 'image': larger than Pillow's decompression-bomb"):
        read_all(good_pngs(tmp_path / "images", n=4))


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_parquet_row_names_the_file_and_row(tmp_path: Path, workers: int) -> None:
    """With workers the error is raised in a worker process and still arrives as the one line."""
    bad = labelled_parquet(tmp_path / "data")
    with pytest.raises(DistganError) as info:
        read_all(tmp_path / "data", ("image", "label"), workers=workers)
    assert str(info.value) == (
        f"data.path={tmp_path / 'data'}: parquet file {bad} row 5, column 'image': not an image in an allowed "
        "format (PNG, JPEG, BMP, GIF, WEBP, TIFF); fix or remove it (a bad example stops the run)"
    )


def _parquet(path: Path, columns: dict, features: datasets.Features | None = None) -> Path:
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


def test_image_column_that_holds_no_images_is_refused_from_the_schema(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "d.parquet", {"image": list(range(8)), "photo": [Image.new("L", (4, 4))] * 8})
    with pytest.raises(DistganError) as info:
        ImageStream(DataConfig(path=str(path)), ("image",))
    assert str(info.value) == (
        f"data.image_column='image': column of {path} holds int64, not images; set data.image_column to an image "
        "column (image columns: photo)"
    )


def test_label_column_that_is_not_integer_is_refused_from_the_schema(tmp_path: Path) -> None:
    images = [Image.new("L", (4, 4))] * 6
    path = _parquet(tmp_path / "d.parquet", {"image": images, "label": ["cat", "dog"] * 3})
    with pytest.raises(DistganError) as info:
        ImageStream(DataConfig(path=str(path)), ("image", "label"))
    assert str(info.value) == (
        f"data.label_column='label': column of {path} holds string, not integer class ids; store labels as "
        "integers 0..N-1 (or a ClassLabel) or set data.label_column"
    )
    ImageStream(DataConfig(path=str(path)), ("image",))  # a family that reads no labels does not care


def test_missing_label_names_the_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(8)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    path = _parquet(tmp_path / "d.parquet", {"image": images, "label": [0, 1, 2, None, 0, 1, 2, 0]}, features)
    with pytest.raises(DistganError, match=rf"parquet file {path} row 3, column 'label': label None is not an integer"):
        read_all(path, ("image", "label"), num_classes=3)


def test_hub_id_offline_and_not_in_the_cache_is_one_line(monkeypatch) -> None:
    """HF_DATASETS_OFFLINE (datasets reads it at import: set its effect too); HF_HUB_OFFLINE: tests/launch."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DistganError) as info:
        ImageStream(DataConfig(path="nobody/no-such-dataset"), ("image",))
    assert str(info.value) == (
        "data.path=nobody/no-such-dataset: no such local file or folder, and not in the local Hugging Face cache "
        "(HF_DATASETS_OFFLINE=1 forbids downloading it); download it where there is network (`huggingface-cli "
        "download --repo-type dataset nobody/no-such-dataset --local-dir DIR`) and set data.path=DIR (parquet, "
        "imagefolder or a folder of images)"
    )


def test_damaged_parquet_footer_is_refused_before_reading(tmp_path: Path) -> None:
    bad = labelled_parquet(tmp_path / "data", bad_row=None)
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(
        DistganError, match=rf"^data.path=.*: parquet file {bad} is damaged \(.*magic bytes.*; re-create"
    ):
        ImageStream(DataConfig(path=str(tmp_path / "data")), ("image",))


def test_damaged_parquet_page_read_by_a_worker_names_the_file(tmp_path: Path) -> None:
    bad = labelled_parquet(tmp_path / "data", bad_row=None)
    data = bytearray(bad.read_bytes())
    data[200:1200] = b"\xff" * 1000  # inside the first data page; the footer stays valid
    bad.write_bytes(bytes(data))
    with pytest.raises(DistganError, match=rf"^data.path=.*: parquet file {bad} is damaged \(.*\); re-create or re-"):
        read_all(tmp_path / "data", workers=2)
