"""Reference statistics of real data, computed once and cached: `<key hash>.safetensors` + `<key hash>.json`.

The key names everything the numbers depend on: the data (resolved path, split, columns, image size,
channels, number of images) and the extractor (name and weights file sha256). A changed key is another
file, so it is recomputed; files are written to temporary names and renamed (the JSON last, so a JSON
means a complete entry).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distgan.config import DataConfig

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """$DISTGAN_CACHE, else ~/.cache/distgan/reference."""
    return Path(os.environ.get("DISTGAN_CACHE") or Path.home() / ".cache" / "distgan" / "reference")


def reference_key(data: DataConfig, columns: tuple[str, ...], ext: nn.Module, num_real: int | None) -> dict[str, Any]:
    """Everything the reference numbers depend on, as plain JSON."""
    from distgan.data.source import resolve_source

    source = resolve_source(data.path)
    names = {"image": data.image_column, "label": data.label_column, "source": data.source_column or data.image_column}
    return {
        "version": CACHE_VERSION,
        "data": source.kwargs.get("data_dir") or str(source.kwargs.get("data_files") or data.path),
        "split": data.split,
        "columns": {c: names[c] for c in columns},
        "direction": data.direction if "source" in columns else None,
        "image_size": data.image_size,
        "channels": data.channels,
        "extractor": ext.name,
        "weights_sha256": ext.weights_sha256,
        "num_images": num_real,  # None: the whole split
    }


class ReferenceCache:
    """A folder of cached reference statistics/features keyed by `reference_key`."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder else default_cache_dir()

    def _paths(self, key: dict[str, Any]) -> tuple[Path, Path]:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.folder / f"{digest}.safetensors", self.folder / f"{digest}.json"

    def load(self, key: dict[str, Any], need: set[str]) -> dict[str, Any] | None:
        """The cached entry if it exists for exactly this key and holds what is needed, else None."""
        tensors_file, key_file = self._paths(key)
        if not key_file.is_file() or not tensors_file.is_file():
            return None
        try:
            meta = json.loads(key_file.read_text())
            if meta.get("key") != key:
                return None
            tensors = load_file(str(tensors_file))
        except (OSError, ValueError, json.JSONDecodeError):
            return None  # damaged: recompute and overwrite
        if not need <= tensors.keys():
            return None
        out: dict[str, Any] = {"n": int(meta["n"])}
        for k, v in tensors.items():
            out[k] = v.numpy() if k in ("mu", "sigma") else v
        return out

    def save(self, key: dict[str, Any], ref: dict[str, Any]) -> Path:
        """Write an entry atomically (tensors, then the JSON key); returns the JSON's path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors_file, key_file = self._paths(key)
        tensors = {
            k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v.cpu().contiguous())
            for k, v in ref.items()
            if k != "n"
        }
        tmp = tensors_file.with_name(f".{tensors_file.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, tensors_file)
        tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "n": ref["n"], "tensors": sorted(tensors)}, indent=2))
        os.replace(tmp, key_file)
        return key_file
