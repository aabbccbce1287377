"""Image grids as uint8 (W&B 0.31 stores float images in [0, 1] as black)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

PADDING = 2  # black pixels around every image of a grid, as torchvision's make_grid


def grid_uint8(images: torch.Tensor, nrow: int) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (H', W', 3) uint8 grid of `nrow` images per row (torchvision's `make_grid`
    layout, without importing torchvision: it costs every process over a second of start-up)."""
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2  # [0, 1]
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    n, c, h, w = x.shape
    if n == 1:  # one image: itself, unpadded (as make_grid)
        return x[0].permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = torch.zeros(c, rows * (h + PADDING) + PADDING, cols * (w + PADDING) + PADDING)
    for i in range(n):
        top, left = (i // cols) * (h + PADDING) + PADDING, (i % cols) * (w + PADDING) + PADDING
        grid[:, top : top + h, left : left + w] = x[i]
    return grid.permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a uint8 HxWx3 (or HxW) array as PNG (to a temporary name first, so a crash leaves no half file)."""
    _save(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def save_gif(frames: list[np.ndarray], path: Path, fps: int) -> None:
    """Write uint8 frames as an animated GIF that loops, `fps` frames per second (atomically, as save_png)."""
    images = [Image.fromarray(f) for f in frames]
    duration = round(1000 / fps)
    _save(
        path,
        lambda tmp: images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
        ),
    )


def _save(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    tmp.replace(path)


def image_uint8(image: torch.Tensor) -> np.ndarray:
    """One (C, H, W) image in [-1, 1] -> (H, W) uint8 for one channel, else (H, W, C)."""
    pixels = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
