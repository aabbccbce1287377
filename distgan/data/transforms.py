"""Per-example image transforms; they run inside DataLoader workers (the stream's `map` is lazy)."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import torch
from datasets.utils.file_utils import is_local_path, xopen
from PIL import ExifTags, Image, ImageOps


class ImageTransform:
    """Resize, crop (center, or random from `load_size`), optional flip, scale to [-1, 1].

    Called with several images (a source/target pair) it applies the same crop and flip to all of
    them, each resized to load x load first, as pix2pix does; one image keeps its aspect ratio (short
    side resized) before the crop. Randomness comes from `generator` (torch's global RNG if None).
    `uint8` gives the same crops before scaling: DataLoader workers use it, and `to_float` scales a
    whole batch at once (a quarter of the bytes between processes, one tensor op instead of one per image).
    """

    def __init__(self, size: int, channels: int, load_size: int | None = None, random_flip: bool = False) -> None:
        self.size, self.channels, self.load = size, channels, load_size or size
        self.random_crop, self.random_flip = load_size is not None and load_size > size, random_flip
        self.random = self.random_crop or self.random_flip  # whether calls draw random numbers

    def __call__(self, *images: Image.Image, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Float32 (C, size, size) tensors in [-1, 1]."""
        return [to_float(t) for t in self.uint8(*images, generator=generator)]

    def uint8(self, *images: Image.Image, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Uint8 (C, size, size) tensors: the crops `__call__` scales."""
        if len(images) > 1:
            images = tuple(
                im if im.size == (self.load, self.load) else im.resize((self.load,) * 2, BICUBIC) for im in images
            )
        else:
            images = (resize_short_side(images[0], self.load),)
        w, h = images[0].size
        if self.random_crop:
            top, left = (int(torch.randint(0, d - self.size + 1, (), generator=generator)) for d in (h, w))
        else:
            top, left = (h - self.size) // 2, (w - self.size) // 2
        flip = self.random_flip and bool(torch.rand((), generator=generator) < 0.5)
        out = []
        for im in images:
            t = pil_to_uint8(im)[:, top : top + self.size, left : left + self.size]
            out.append(t.flip(-1) if flip else t.contiguous())
        return out


# PIL's bicubic filter (antialiased: it widens with the scale factor), as torchvision's resize of a PIL image.
BICUBIC = Image.Resampling.BICUBIC


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is `size`, keeping the aspect ratio: torchvision's `resize(image, size)`, bicubic
    (same output size and pixels), without its per-call overhead."""
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_short, new_long = size, int(size * long / short)
    new = (new_short, new_long) if w <= h else (new_long, new_short)
    return image if new == (w, h) else image.resize(new, BICUBIC)


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """An L or RGB PIL image -> uint8 (C, H, W), a view of one copy of its pixels."""
    array = np.array(image)  # a writable copy: torch.from_numpy warns on read-only arrays
    return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Uint8 images (any shape) -> float32 in [-1, 1]: the same values torchvision's `to_tensor` then `* 2 - 1` give."""
    return images.to(torch.float32).div(255) * 2 - 1


# Raster formats only, whatever a file is named or starts with: Pillow sniffs content and would hand
# EPS/PostScript (and PDF-like) files to Ghostscript; untrusted dataset files must never reach it.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
Image.init()  # register every plugin now: lazy registration from reader threads raced (KeyError: 'PNG')


def to_pil(value: Any, channels: int) -> Image.Image:
    """A decoded PIL image, an undecoded {'bytes', 'path'} dict, or an array -> PIL in L or RGB.

    Raises ValueError with a short reason for anything that is not a readable raster image of an allowed
    format (IMAGE_FORMATS), is truncated, or is over Pillow's decompression-bomb limit (MAX_IMAGE_PIXELS).
    """
    file = _file(value) if isinstance(value, dict) else None  # outside the try: a network error is no bad image
    try:
        if file is not None:
            with warnings.catch_warnings():  # over the limit Pillow only warns (up to twice it): make it an error
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                value = Image.open(file, formats=IMAGE_FORMATS)
                value.load()  # decode now: a truncated file fails here, inside this try
            if value.getexif().get(ExifTags.Base.Orientation) is not None:  # as datasets' own decoding does
                value = ImageOps.exif_transpose(value)
        elif isinstance(value, np.ndarray):
            value = Image.fromarray(value)
        elif isinstance(value, torch.Tensor):
            value = Image.fromarray(value.numpy())
        if not isinstance(value, Image.Image):
            raise ValueError(f"expected an image, got {type(value).__name__}")
        return value.convert("L" if channels == 1 else "RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(
            f"larger than Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels "
            "(PIL.Image.MAX_IMAGE_PIXELS)"
        ) from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"not an image in an allowed format ({', '.join(IMAGE_FORMATS)})") from None
    except ValueError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, EOFError, ... for damaged files
        raise ValueError(f"cannot decode the image ({type(e).__name__}: {str(e).strip() or 'no detail'})") from None


def _file(value: dict[str, Any]) -> Any:
    """What Image.open reads for an undecoded {'bytes', 'path'} image: its bytes, a local path, or a hub file."""
    if value.get("bytes"):
        return io.BytesIO(value["bytes"])
    path = value.get("path")
    if not path:
        raise ValueError("no image (no bytes and no path)")
    if is_local_path(path):
        return path
    with xopen(path, "rb") as f:  # a file of a streamed hub dataset
        return io.BytesIO(f.read())
