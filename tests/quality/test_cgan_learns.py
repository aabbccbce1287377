"""The cgan family learns its conditioning: images generated for class c look like class c to a classifier.

Four clearly different kinds of 16x16 grayscale shapes (horizontal bar, vertical bar, filled square, ring),
each drawn with random position, size, brightness and noise, are written as parquet with a ClassLabel
column and trained on through the real code path (config -> stream -> family -> DDP-capable loop ->
exported generator), in-process on one CPU process. A k-nearest-neighbour classifier fitted on real shapes
then labels images drawn from the exported generator for each requested class: an unconditional or
mode-collapsed generator scores about 0.25 (chance), a conditional one close to 1.
"""

from __future__ import annotations

import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier

from distgan.config import build_config
from distgan.sampling import load_generator
from distgan.train.loop import prepare, train

CLASSES = ("hbar", "vbar", "square", "ring")
SIZE = 16
PER_CLASS = 512  # real training images per class
DRAWN = 50  # generated images per class for the check
STEPS = 300
MIN_ACCURACY = 0.8  # chance is 0.25; seeds 0-9 measured 0.92-0.98


def draw_shape(kind: int, rng: np.random.Generator) -> np.ndarray:
    """One (SIZE, SIZE) uint8 image of CLASSES[kind], with random position, size, brightness and noise."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    cy, cx = (SIZE - 1) / 2 + rng.integers(-3, 4, 2)
    if kind in (0, 1):  # a thin long bar: thickness 2-3, length 10-13
        thick, length = rng.integers(2, 4), rng.integers(10, 14)
        along, across = (xx - cx, yy - cy) if kind == 0 else (yy - cy, xx - cx)
        mask = (np.abs(across) < thick / 2) & (np.abs(along) < length / 2)
    elif kind == 2:  # a filled square, side 7-9
        half = rng.integers(7, 10) / 2
        mask = (np.abs(yy - cy) < half) & (np.abs(xx - cx) < half)
    else:  # a ring 2 px wide, outer radius 5-6.5 (less jitter: it must stay inside the image)
        cy, cx = (SIZE - 1) / 2 + rng.integers(-1, 2, 2)
        radius, outer = np.hypot(yy - cy, xx - cx), rng.uniform(5, 6.5)
        mask = (radius < outer) & (radius > outer - 2)
    image = np.where(mask, rng.uniform(180, 255), 0.0) + rng.normal(0, 10, (SIZE, SIZE))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_shapes(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, SIZE, SIZE) uint8, labels (N,) int64), classes interleaved 0, 1, 2, 3, 0, ..."""
    rng = np.random.default_rng(seed)
    labels = np.arange(per_class * len(CLASSES)) % len(CLASSES)
    return np.stack([draw_shape(int(k), rng) for k in labels]), labels


def write_parquet(images: np.ndarray, labels: np.ndarray, folder: Path) -> Path:
    """A `datasets` parquet folder with an image column and a ClassLabel `label` column (names CLASSES)."""
    folder.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))})
    rows = {"image": [Image.fromarray(x, mode="L") for x in images], "label": labels.tolist()}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return folder


def train_cgan(data: Path, run_dir: Path, seed: int, steps: int = STEPS) -> Path:
    """Train the cgan in this process through the framework's own loop; returns the exported generator."""
    cfg = build_config(
        {
            "model": {"family": "cgan", "z_dim": 8, "ngf": 32, "ndf": 32},  # a short z: the one-hot weighs more
            "data": {"path": str(data), "image_size": SIZE, "channels": 1, "shuffle_buffer": 1024, "num_workers": 0},
            "train": {"batch_size": 64, "max_steps": steps, "seed": seed, "lr_g": 1e-3, "lr_d": 1e-3},
            "log": {"every": 50, "sample_every": steps, "num_samples": 32, "wandb": "off", "progress": False},
            "checkpoint": {"every": steps, "keep": 1},
        },
        name="cgan_learns",
    )
    threads = torch.get_num_threads()
    # Tiny convolutions run fastest on one thread; with 2 cores shared with other processes, OpenMP's
    # spinning threads made each step ~30x slower in measurements.
    torch.set_num_threads(1)
    try:
        train(prepare(cfg, run_dir, None), run_dir)
    finally:  # leave this pytest process as it was
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)  # the singleton would leak this run's settings into later tests
    return run_dir / "generator"


def to_features(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 (N, H, W) or [-1, 1] (N, 1, H, W) -> (N, H*W) float in [-1, 1], the classifier's input."""
    if isinstance(images, torch.Tensor):
        return images.detach().float().clamp(-1, 1).flatten(1).numpy()
    return images.reshape(len(images), -1).astype(np.float64) / 127.5 - 1


@torch.no_grad()
def drawn_accuracy(classifier: KNeighborsClassifier, G: torch.nn.Module, z_dim: int, seed: int) -> float:
    """Fraction of DRAWN images per class that the classifier assigns to the class they were drawn for."""
    labels = torch.arange(len(CLASSES)).repeat_interleave(DRAWN)  # (4 * DRAWN,)
    z = torch.randn(len(labels), z_dim, generator=torch.Generator().manual_seed(seed))
    predicted = classifier.predict(to_features(G(z, labels)))
    return float((predicted == labels.numpy()).mean())


def learning_check(tmp: Path, seed: int) -> dict[str, float]:
    """Train on shapes drawn with `seed`; accuracies of the real-data classifier on held-out real images,
    on the untrained generator's images and on the trained generator's images."""
    images, labels = make_shapes(PER_CLASS, seed)
    held_out, held_labels = make_shapes(DRAWN, seed + 1000)
    classifier = KNeighborsClassifier(n_neighbors=5).fit(to_features(images), labels)
    generator = train_cgan(write_parquet(images, labels, tmp / "shapes"), tmp / "run", seed)
    family, G = load_generator(generator)
    torch.manual_seed(seed)
    untrained = family.build_generator().eval()
    return {
        "real": float(classifier.score(to_features(held_out), held_labels)),
        "untrained": drawn_accuracy(classifier, untrained, family.z_dim, seed),
        "trained": drawn_accuracy(classifier, G, family.z_dim, seed),
    }


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict[str, float]:
    start = time.perf_counter()
    out = learning_check(tmp_path_factory.mktemp("cgan_learns"), seed=0)
    out["seconds"] = time.perf_counter() - start
    print(f"cgan learning check: {out}")
    return out


def test_classifier_recognises_real_shapes(result: dict[str, float]) -> None:
    assert result["real"] >= 0.95  # the classes are clearly distinguishable


def test_untrained_generator_is_at_chance(result: dict[str, float]) -> None:
    assert result["untrained"] <= 0.45  # control: the check does not pass for a generator that learned nothing


def test_generated_images_are_their_requested_class(result: dict[str, float]) -> None:
    assert result["trained"] >= MIN_ACCURACY, result
