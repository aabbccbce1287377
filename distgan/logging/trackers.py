"""W&B through Accelerate's tracker: online when logged in, offline otherwise, off by flag."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from distgan.errors import ConfigError

WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")  # what wandb.init accepts


def wandb_mode(setting: str) -> str:
    """`log.wandb` (auto/online/offline/off) -> a wandb.init mode; auto honours WANDB_MODE, then login."""
    if setting == "off":
        return "disabled"
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _logged_in() else "offline"


def check_wandb(setting: str) -> None:
    """Refuse up front (before any model is built) a W&B mode that wandb.init would fail on later."""
    mode = wandb_mode(setting)
    via = "log.wandb" if setting != "auto" else "WANDB_MODE (with log.wandb=auto)"
    if mode not in WANDB_MODES:
        raise ConfigError(f"{via}: unknown W&B mode {mode!r}; use one of online, offline, disabled")
    if mode in ("online", "run", "shared") and not _logged_in():
        raise ConfigError(
            f"{via}: online W&B logging needs a login: run `wandb login` (or set WANDB_API_KEY), "
            "or log offline with log.wandb=offline (sync later with `wandb sync`)"
        )


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = (os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://")[-1].rstrip("/")
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None  # wandb honours NETRC
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_init_kwargs(run_dir: Path, mode: str, name: str, run_id: str | None) -> dict[str, Any]:
    """`init_kwargs` for `accelerator.init_trackers`: the run lives in run_dir/wandb and resumes by id."""
    kwargs: dict[str, Any] = {"dir": str(run_dir), "mode": mode, "name": name}
    if run_id:
        kwargs.update(id=run_id, resume="allow")
    return {"wandb": kwargs}
