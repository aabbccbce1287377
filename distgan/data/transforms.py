"""Per-example image transforms; they run inside DataLoader workers (the stream's `map` is lazy)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T


def image_transform(size: int, channels: int) -> T.Compose:
    """Resize the short side, center-crop to size x size, and scale to [-1, 1]: (C, size, size) float32."""
    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize([0.5] * channels, [0.5] * channels),
        ]
    )


def to_pil(value: Any, channels: int) -> Image.Image:
    """A decoded PIL image, an undecoded {'bytes', 'path'} dict, or an array -> PIL in L or RGB."""
    if isinstance(value, dict):
        value = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
    elif isinstance(value, np.ndarray):
        value = Image.fromarray(value)
    elif isinstance(value, torch.Tensor):
        value = Image.fromarray(value.numpy())
    if not isinstance(value, Image.Image):
        raise TypeError(f"expected an image, got {type(value).__name__}")
    return value.convert("L" if channels == 1 else "RGB")
