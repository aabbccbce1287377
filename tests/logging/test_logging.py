"""W&B mode selection and uint8 sample grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distgan.logging.images import grid_uint8, image_uint8
from distgan.logging.trackers import wandb_mode


def test_wandb_mode_offline_unless_logged_in(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's environment wins in auto
    assert wandb_mode("auto") == "disabled"
    assert wandb_mode("off") == "disabled" and wandb_mode("offline") == "offline"


def test_grids_are_uint8_with_full_range() -> None:
    images = torch.linspace(-1, 1, 4 * 3 * 8 * 8).view(4, 3, 8, 8)
    grid = grid_uint8(images, nrow=2)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 10 + 2, 2 * 10 + 2, 3)
    assert grid.max() == 255  # not a [0, 1] float image that W&B would store black
    gray = image_uint8(torch.full((1, 5, 5), -1.0))
    assert gray.shape == (5, 5) and gray.max() == 0


@pytest.mark.parametrize("n, channels, nrow", [(9, 1, 3), (10, 3, 4), (5, 3, 8), (1, 1, 1)])
def test_grid_is_torchvisions_make_grid(n: int, channels: int, nrow: int) -> None:
    """Our grid (no torchvision import at start-up) is make_grid's, pixel for pixel."""
    from torchvision.utils import make_grid

    x = torch.rand(n, channels, 7, 5, generator=torch.Generator().manual_seed(n)) * 2.2 - 1.1  # past [-1, 1] too
    ref = make_grid(x.clamp(-1, 1), nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    assert np.array_equal(grid_uint8(x, nrow), ref.permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy())
