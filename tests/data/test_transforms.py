"""The uint8 path of the transforms (workers send uint8, the batch is scaled at once) gives exactly the values
of torchvision's resize + to_tensor path, and the stream's batches equal its per-example (evaluator) transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from distgan.config import DataConfig
from distgan.data import ImageStream
from distgan.data.transforms import ImageTransform, pil_to_uint8, resize_short_side, to_float


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("size", [(28, 28), (20, 30), (218, 178), (65, 33)])
def test_uint8_path_equals_torchvision_resize_and_to_tensor(mode: str, size: tuple[int, int]) -> None:
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)).convert(mode)
    for target in (16, 64):
        expected = TF.resize(image, target, interpolation=InterpolationMode.BICUBIC, antialias=True)
        assert resize_short_side(image, target).size == expected.size
        ours = to_float(pil_to_uint8(resize_short_side(image, target)))
        assert torch.equal(ours, TF.to_tensor(expected) * 2 - 1)


def test_batches_equal_the_per_example_transform(digits: Path) -> None:
    """Random crops and flips too: the workers' uint8 crops, scaled per batch, are the float crops of `example()`."""
    cfg = DataConfig(path=str(digits), image_size=16, channels=3, load_size=20, random_flip=True, num_workers=0)
    stream = ImageStream(cfg, ("image", "label"))
    _, floats, _ = stream.loader(8, seed=2, rank=0, world_size=1)  # per-example float images, as evaluators read
    rows = [row for _, row in zip(range(16), floats)]
    batches = [batch for _, (_, batch) in zip(range(2), stream.batches(8, seed=2, rank=0, world_size=1))]
    assert torch.equal(torch.cat([b["image"] for b in batches]), torch.stack([r["image"] for r in rows]))
    assert batches[0]["image"].dtype == torch.float32


def test_call_is_the_scaled_uint8_crop() -> None:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    transform = ImageTransform(16, 3, load_size=24, random_flip=True)
    (u8,) = transform.uint8(image, generator=torch.Generator().manual_seed(4))
    (f32,) = transform(image, generator=torch.Generator().manual_seed(4))
    assert u8.dtype == torch.uint8 and u8.shape == (3, 16, 16) and torch.equal(to_float(u8), f32)
