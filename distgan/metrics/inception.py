"""The standard FID network: torch-fidelity's port of TF's inception-2015-12-05 graph, fed uint8 images.

torch-fidelity's `FeatureExtractorInceptionV3` does the TF-exact preprocessing itself when given uint8
(B, 3, H, W): TF1-style bilinear resize to 299 (`interpolate_bilinear_2d_like_tensorflow1x`, no
antialiasing) and `(x - 128) / 128`. We only make the uint8 images (`features.to_uint8`) and repeat a
grayscale channel to three. Outputs: pool3 (2048) for FID/KID/PR, `logits_unbiased` (1008) for IS.

Weights, in this order: an explicit file (a plain state_dict with torch-fidelity's key names), the torch hub
cache file torch-fidelity itself uses, or a download where there is network. Files are loaded with
`weights_only=True` (nothing is unpickled beyond tensors).
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

from distgan.errors import DistganError

WEIGHTS_URL = URL_INCEPTION_V3  # torch-fidelity's release asset (TF graph converted to a PyTorch state_dict)
WEIGHTS_FILE = WEIGHTS_URL.rsplit("/", 1)[1]  # weights-inception-2015-12-05-6726825d.pth
PROBE_TIMEOUT_S = 5.0
_SHA256: dict[tuple[str, int, float], str] = {}  # (path, size, mtime) -> sha256: hash a 92 MB file once


def hub_weights_path() -> Path:
    """Where torch-fidelity keeps the weights: `$TORCH_HOME/hub/checkpoints/<file>` (torch.hub's cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def resolve_inception_weights(path: str | Path | None = None, download: bool = True) -> Path:
    """The weights file to use, checked cheaply (no network model is built): for training start-up.

    `path` (eval.inception_weights / --inception-weights) must exist if given. Otherwise the hub cache
    file; if it is missing and `download`, it is fetched there (torch.hub writes a temporary file and
    renames it). Offline (no route to the host, or DISTGAN_OFFLINE=1) and missing: one DistganError line
    naming the file, the URL and where to put it.
    """
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise DistganError(f"--inception-weights {path}: no such file (a state_dict .pth, e.g. {WEIGHTS_FILE})")
        return file
    file = hub_weights_path()
    if file.is_file():
        return file
    if download and _online():
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(WEIGHTS_URL, str(file), hash_prefix=None, progress=False)
        except Exception as e:  # noqa: BLE001 - urllib raises several types; any of them means "not fetched"
            raise DistganError(_missing_message(file, f"download failed: {e}")) from None
        return file
    raise DistganError(_missing_message(file, "offline"))


def _missing_message(file: Path, why: str) -> str:
    return (
        f"Inception weights {WEIGHTS_FILE} not found ({why}): on a machine with network run "
        f"`curl -L -o {WEIGHTS_FILE} {WEIGHTS_URL}` and put the file at {file} (or pass --inception-weights "
        "FILE / eval.inception_weights=FILE); or use --features classifier:PATH"
    )


def _online() -> bool:
    if os.environ.get("DISTGAN_OFFLINE", "0") not in ("0", ""):
        return False
    url = urlparse(WEIGHTS_URL)
    try:
        socket.create_connection((url.hostname, 443), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def file_sha256(file: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime): part of the reference-statistics cache key."""
    st = file.stat()
    key = (str(file.resolve()), st.st_size, st.st_mtime)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def load_state_dict(file: Path) -> dict[str, Tensor]:
    """A plain state_dict, read with weights_only=True; anything else is a one-line error naming the file."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt file or one holding more than tensors
        raise DistganError(f"{file}: not a plain state_dict readable with weights_only=True ({e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DistganError(f"{file}: expected a state_dict (name -> tensor) with torch-fidelity's key names")
    return state


class InceptionFeatures(nn.Module):
    """uint8 (B, 1 or 3, H, W) -> {"pool": (B, 2048), "logits": (B, 1008) unbiased}, both float32."""

    name = "inception"

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        file = resolve_inception_weights(weights)
        state = load_state_dict(file)
        # torch-fidelity's constructor calls torch.load(path, weights_only=False) on what it is given; hand it
        # an in-memory copy of tensors we already read safely, so no file is ever unpickled.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        try:
            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=buffer
            )
        except RuntimeError as e:  # load_state_dict: missing/unexpected keys or shapes
            raise DistganError(f"{file}: weights do not fit torch-fidelity's InceptionV3 ({str(e)[:200]})") from None
        self.weights_file = file
        self.weights_sha256 = file_sha256(file)
        self.dim, self.num_classes = 2048, 1008

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # grayscale -> RGB, as PIL's convert("RGB")
        pool, logits = self.net(images)
        return {"pool": pool, "logits": logits}
