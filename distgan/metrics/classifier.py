"""A small CNN classifier that distgan trains itself (`scripts/train_classifier.py`): an offline extractor.

Its penultimate activations (`feature_dim`) are the features for FID/KID/PR, its softmax gives IS and the
class accuracy of conditional generators. Numbers in its feature space are comparable only with numbers
from the same classifier file (its sha256 is part of every cache key), never with papers' Inception FID.

Saved as `DIR/model.safetensors` + `DIR/config.json` (image size, channels, classes, widths, test accuracy).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from distgan.config import DataConfig
from distgan.errors import DistganError
from distgan.metrics.inception import file_sha256


@dataclass
class ClassifierConfig:
    """What the classifier reads and how wide it is; stored as config.json next to the weights."""

    image_size: int
    channels: int
    num_classes: int
    width: int = 16  # channels of the first conv block; doubled per block
    feature_dim: int = 64
    test_accuracy: float | None = None  # measured on held-out images by scripts/train_classifier.py
    data: str = ""  # what it was trained on (for the user; not used)


class SmallCNN(nn.Module):
    """(B, C, S, S) in [-1, 1] -> conv blocks (conv-BN-ReLU, pool) -> 4x4 map -> features -> logits."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c_in, width, size = cfg.channels, cfg.width, cfg.image_size
        for _ in range(max(1, min(4, int(math.log2(max(size, 2))) - 2))):  # 32 -> 3 blocks (32, 16, 8 -> 4)
            blocks += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
            blocks.append(nn.MaxPool2d(2))
            c_in, width = width, width * 2
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(4), nn.Flatten())  # keep the 4x4 layout
        self.embed = nn.Sequential(nn.Linear(c_in * 16, cfg.feature_dim), nn.ReLU(True))
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (B, feature_dim)."""
        return self.embed(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def save_classifier(model: SmallCNN, cfg: ClassifierConfig, out: Path) -> None:
    """Write out/model.safetensors and out/config.json (each to a temporary name first)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".model.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, out / "model.safetensors")
    tmp = out / ".config.json.tmp"
    tmp.write_text(json.dumps(asdict(cfg), indent=2))
    os.replace(tmp, out / "config.json")


def load_classifier(path: str | Path) -> tuple[SmallCNN, ClassifierConfig, Path]:
    """(model in eval mode, its config, the weights file) from a folder written by save_classifier."""
    from distgan.train.checkpoint import load_weights

    folder = Path(path)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise DistganError(
            f"--features classifier:{path}: expected model.safetensors and config.json "
            "(train one: python scripts/train_classifier.py --data PATH --out DIR)"
        )
    cfg = ClassifierConfig(**json.loads((folder / "config.json").read_text()))
    model = SmallCNN(cfg)
    load_weights(model, folder / "model.safetensors")
    return model.eval(), cfg, folder / "model.safetensors"


class ClassifierFeatures(nn.Module):
    """uint8 (B, C, H, W) -> {"pool": penultimate (B, feature_dim), "logits": (B, num_classes)}, float32.

    uint8 -> [-1, 1] is the inverse of `to_uint8`; images of another size (folders) are resized to the
    classifier's size (bilinear, antialiased) and converted to its channels.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.net, self.cfg, file = load_classifier(path)
        self.name = f"classifier:{Path(path).resolve()}"
        self.weights_file, self.weights_sha256 = file, file_sha256(file)
        self.dim, self.num_classes = self.cfg.feature_dim, self.cfg.num_classes

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = images.float() / 127.5 - 1
        if x.shape[1] != self.cfg.channels:
            x = x.mean(1, keepdim=True) if self.cfg.channels == 1 else x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.cfg.image_size, self.cfg.image_size):
            x = F.interpolate(x, size=self.cfg.image_size, mode="bilinear", antialias=True, align_corners=False)
        pool = self.net.features(x)
        return {"pool": pool.float(), "logits": self.net.head(pool).float()}


# --- training ------------------------------------------------------------------------------------------
def load_labelled(data: DataConfig, max_images: int | None = None) -> tuple[Tensor, Tensor, int]:
    """(uint8 images (N, C, S, S), int64 labels (N,), num_classes) read once through distgan's data stream.

    The stream is read unshuffled, in one process, with the training transform (resize, center crop) and
    stored as uint8, the same quantisation generated images get before feature extraction.
    """
    from distgan.data import ImageStream
    from distgan.metrics.features import to_uint8

    stream = ImageStream(replace(data, shuffle_buffer=0, load_size=None, random_flip=False), ("image", "label"))
    _, ds, _ = stream.loader(batch_size=1, seed=0, rank=0, world_size=1)
    images, labels = [], []
    for i, row in enumerate(ds):
        if max_images is not None and i >= max_images:
            break
        images.append(to_uint8(row["image"][None]))
        labels.append(int(row["label"]))
    if not images:
        raise DistganError(f"data.path={data.path}: no labelled images in split {data.split!r}")
    labels_t = torch.tensor(labels)
    num_classes = stream.spec.num_classes
    if int(labels_t.min()) < 0 or int(labels_t.max()) >= num_classes:
        raise DistganError(f"data.{data.label_column}: labels outside [0, {num_classes}); set data.num_classes")
    return torch.cat(images), labels_t, num_classes


def train_classifier(
    images: Tensor,
    labels: Tensor,
    cfg: ClassifierConfig,
    steps: int,
    batch_size: int = 64,
    lr: float = 5e-3,
    seed: int = 0,
    log: Any = print,
) -> SmallCNN:
    """Adam with a cosine schedule on uint8 images (N, C, S, S); small random shifts as augmentation."""
    torch.manual_seed(seed)
    model = SmallCNN(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x = images[idx].float() / 127.5 - 1
        pad = max(1, cfg.image_size // 16)
        dx, dy = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=gen))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % max(1, steps // 5) == 0:
            log(f"step {step + 1}/{steps}  loss {loss.item():.4f}  ({time.time() - start:.1f} s)")
    return model.eval()


@torch.no_grad()
def accuracy(extractor: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Share of uint8 images whose argmax class (through the extractor, as in evaluation) equals the label."""
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = extractor(images[start : start + batch_size])["logits"]
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / len(images)
