"""Turn `data.path` into arguments for `datasets.load_dataset`, failing fast on what cannot work.

Accepted: a hub dataset id (`nielsr/CelebA-faces`), a parquet file, a folder of parquet files (e.g. a hub
snapshot), an imagefolder (images, optionally in class sub-folders) or a plain folder of images.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from distgan.config import REPO_ROOT
from distgan.errors import DistganError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
HUB_PROBE_TIMEOUT_S = 5.0
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
TRUE = ("1", "on", "yes", "true")  # what huggingface_hub reads as set


@dataclass(frozen=True)
class Source:
    """`load_dataset(builder, **kwargs, split=..., streaming=True)` arguments, and a label for messages."""

    builder: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def parquet_files(self) -> list[Path]:
        """The local parquet files read (none for a hub dataset or images): to name the file of a bad row."""
        if self.builder != "parquet":
            return []
        if "data_files" in self.kwargs:
            return [Path(f) for f in self.kwargs["data_files"]]
        return sorted(Path(self.kwargs["data_dir"]).rglob("*.parquet"))


def resolve_source(path: str) -> Source:
    """Classify `data.path`; raises DistganError (one line, with the fix) for a missing path or no hub."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists() and (REPO_ROOT / p).exists():
        p = REPO_ROOT / p  # shipped configs name repo-relative data (data/digits): works from any directory
    if p.is_file():
        if p.suffix != ".parquet":
            raise DistganError(f"data.path={path}: a single file must be .parquet; for images give their folder")
        return Source("parquet", {"data_files": [str(p)]}, f"parquet file {p}")
    if p.is_dir():
        if next(p.rglob("*.parquet"), None) is not None:
            return Source("parquet", {"data_dir": str(p)}, f"parquet folder {p}")
        if any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.rglob("*") if f.is_file()):
            return Source("imagefolder", {"data_dir": str(p)}, f"image folder {p}")
        raise DistganError(
            f"data.path={path}: folder has no .parquet or image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    if path.startswith(("/", ".", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path:
        raise DistganError(f"data.path={path}: no such file or folder")
    _check_hub_reachable(path)
    return Source(path, {}, f"hub dataset {path}")


def hub_offline() -> bool:
    """Whether `datasets` uses the local cache only: HF_DATASETS_OFFLINE if set, else HF_HUB_OFFLINE (as datasets)."""
    value = os.environ.get("HF_DATASETS_OFFLINE", os.environ.get("HF_HUB_OFFLINE", ""))
    return value.strip().lower() in TRUE


def not_cached(repo_id: str) -> DistganError:
    """The error for a hub dataset that offline mode cannot find in the local cache."""
    names = " and ".join(f"{v}={os.environ[v]}" for v in OFFLINE_VARS if os.environ.get(v, "").strip().lower() in TRUE)
    return DistganError(
        f"data.path={repo_id}: no such local file or folder, and not in the local Hugging Face cache ({names} "
        "forbids downloading it); download it where there is network "
        f"(`huggingface-cli download --repo-type dataset {repo_id} --local-dir DIR`) "
        "and set data.path=DIR (parquet, imagefolder or a folder of images)"
    )


def _check_hub_reachable(repo_id: str) -> None:
    """Fail in seconds, not after datasets' minute of retries, when the hub cannot be reached."""
    if hub_offline():
        return  # the user asked for the local cache: let datasets look there (ImageStream reports a miss)
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        raise DistganError(
            f"data.path={repo_id}: no such local file or folder, and the Hugging Face Hub ({host}) cannot be "
            "reached to fetch it as a dataset id; download it where there "
            f"is network (`huggingface-cli download --repo-type dataset {repo_id} --local-dir DIR`) and set "
            "data.path=DIR (parquet, imagefolder or a folder of images), or set HF_HUB_OFFLINE=1 to use the cache"
        ) from None
