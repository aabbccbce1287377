"""Rebuild an exported generator (`RUN/generator`) and draw images from it, without the training config.

Images are drawn in batches (`draw_batches`), so memory is bounded by the batch size whatever the number
of images; image i's inputs depend only on the seed and i, not on the batch size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn

from distgan.config import MAX_IMAGE_SIZE, MAX_NUM_CLASSES, MAX_PARAMS, DataConfig, ModelParams, _build
from distgan.errors import ConfigError, DistganError
from distgan.family import DataSpec, Family
from distgan.registry import get_family
from distgan.train.checkpoint import RAW_WEIGHTS, load_weights


def load_generator(path: str | Path, device: str | torch.device = "cpu", raw: bool = False) -> tuple[Family, nn.Module]:
    """(family, G in eval mode) from a folder holding model.safetensors + config.json.

    model.safetensors is the EMA generator when the run kept one; `raw=True` loads the trained G instead
    (model_raw.safetensors)."""
    folder = Path(path)
    meta_file, weights = folder / "config.json", folder / "model.safetensors"
    if raw and weights.is_file() and meta_file.is_file():
        weights = folder / RAW_WEIGHTS
        if not weights.is_file():
            raise DistganError(
                f"--generator {path}: has no {RAW_WEIGHTS} (the run kept no EMA: its G is model.safetensors)"
            )
    if not meta_file.is_file() or not weights.is_file():
        hint = f"; did you mean {folder / 'generator'}?" if (folder / "generator" / "config.json").is_file() else ""
        raise DistganError(
            f"--generator {path}: expected model.safetensors and config.json (a run's generator/ folder){hint}"
        )
    family = _family_from_meta(meta_file)
    _check_shapes(family, weights)  # before allocating: a wrong or tampered config.json must not build a huge G
    G = family.build_generator()
    load_weights(G, weights)
    return family, G.to(device).eval()


def _family_from_meta(meta_file: Path) -> Family:
    """The Family described by an exported config.json; every problem is an error naming the file."""
    try:
        meta = json.loads(meta_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DistganError(f"{meta_file}: not valid JSON ({e}); re-export the generator from its run") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("family"), str):
        raise DistganError(f"{meta_file}: has no 'family' name; is this a distgan generator/ folder?")
    if not isinstance(meta.get("params"), dict) or not isinstance(meta.get("spec"), dict):
        raise DistganError(f"{meta_file}: needs 'params' and 'spec' mappings; re-export the generator from its run")
    try:
        family_cls = get_family(meta["family"])
        params: ModelParams = _build(family_cls.Params, meta["params"], "model")
        spec = _spec(meta["spec"])
        params.validate(DataConfig(path="-", image_size=spec.image_size, channels=spec.channels))
    except ConfigError as e:
        raise DistganError(f"{meta_file}: {e}") from None
    return family_cls(params, spec)


def _spec(raw: dict) -> DataSpec:
    size, channels, classes = raw.get("image_size"), raw.get("channels"), raw.get("num_classes")
    if not isinstance(size, int) or not 4 <= size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"spec.image_size: must be an integer in [4, {MAX_IMAGE_SIZE}], got {size!r}")
    if channels not in (1, 3):
        raise ConfigError(f"spec.channels: must be 1 or 3, got {channels!r}")
    if classes is not None and (not isinstance(classes, int) or not 1 <= classes <= MAX_NUM_CLASSES):
        raise ConfigError(f"spec.num_classes: must be null or an integer in [1, {MAX_NUM_CLASSES}], got {classes!r}")
    return DataSpec(size, channels, classes)


def _check_shapes(family: Family, weights: Path) -> None:
    """Build G on the meta device (nothing allocated) and compare its sizes with the weights file's header."""
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in family.build_generator().state_dict().items()}
    except (RuntimeError, ValueError, TypeError) as e:  # sizes beyond int64, impossible layer sizes
        raise DistganError(f"{weights.parent / 'config.json'}: describes no buildable generator ({e})") from None
    if sum(map(_numel, shapes.values())) > MAX_PARAMS:
        raise DistganError(f"{weights.parent / 'config.json'}: describes a generator of over {MAX_PARAMS:.0e} weights")
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise DistganError(f"{weights}: cannot read the weights ({e}); re-export the generator from its run") from None
    if stored != shapes:
        wrong = sorted(set(stored.items()) ^ set(shapes.items()))[:2]
        raise DistganError(
            f"{weights}: weights do not fit the generator described by config.json (e.g. {wrong}); "
            "were the two files taken from different runs?"
        )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def resolve_device(name: str) -> torch.device:
    """`--device` as a torch.device that exists on this machine, else a one-line error."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DistganError(f"--device {name}: not a device name; use cpu or cuda (cuda:1 for the second GPU)") from None
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type, None) if device.type != "mps" else torch.backends.mps
    if device.type == "meta" or backend is None or not hasattr(backend, "is_available"):
        raise DistganError(f"--device {name}: images cannot be drawn there; use cpu or cuda")
    if not backend.is_available():
        raise DistganError(f"--device {name}: no {device.type} device is available on this machine; use --device cpu")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise DistganError(f"--device {name}: this machine has {count} {device.type} device(s)")
    return device


def draw_inputs(family: Family, n: int, seed: int, batch: int, label: int | None = None) -> Iterator[dict[str, Tensor]]:
    """Generator inputs for n images, `batch` at a time (CPU tensors).

    Image i gets the i-th noise vector of a generator seeded with `seed` and, for a class-conditional
    family, class `label` or the i-th class drawn with `seed + 1`: the same images for any batch size.
    """
    noise, classes = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    for start in range(0, n, batch):
        b = min(batch, n - start)
        z = torch.stack([torch.randn(family.z_dim, generator=noise) for _ in range(b)])  # (b, z_dim), per image
        inputs = {"z": z}
        if "label" in family.columns:
            num_classes = family.spec.num_classes or 1
            inputs["label"] = (
                torch.full((b,), label) if label is not None else torch.randint(num_classes, (b,), generator=classes)
            )
        yield inputs


def split_inputs(inputs: dict[str, Tensor], batch: int) -> Iterator[dict[str, Tensor]]:
    """Fixed inputs (e.g. `family.sample_inputs`) in slices of `batch`."""
    n = next(iter(inputs.values())).shape[0]
    for start in range(0, n, batch):
        yield {k: v[start : start + batch] for k, v in inputs.items()}


@torch.no_grad()
def draw_batches(
    family: Family, G: nn.Module, inputs: Iterator[dict[str, Tensor]]
) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
    """(inputs, images in [-1, 1] (b, C, H, W)) per batch of inputs, generated on G's device."""
    device = next(G.parameters()).device
    for batch in inputs:
        batch = {k: v.to(device) for k, v in batch.items()}
        yield batch, family.generate(G, batch)


@torch.no_grad()
def sample(family: Family, G: nn.Module, n: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(inputs, n generated images in [-1, 1] as (n, C, H, W)) from the family's inputs drawn with `seed`."""
    device = next(G.parameters()).device
    inputs = {k: v.to(device) for k, v in family.sample_inputs(n, torch.Generator().manual_seed(seed)).items()}
    return inputs, family.generate(G, inputs)
