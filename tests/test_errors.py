"""distgan.errors.exit_process: Python's exit work, then os._exit, keeping the status."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

SCRIPT = """
import atexit, sys
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, {repo!r})
from distgan.errors import exit_process

pool = ThreadPoolExecutor(2)  # non-daemon workers, as torch.compile's: told to stop, not merely joined
pool.submit(print, "pool ran", flush=True).result()
atexit.register(print, "atexit ran")
print("buffered, flushed at exit", end="")
exit_process(3)
"""


def test_exit_process_stops_thread_pools_runs_atexit_flushes_and_keeps_the_status() -> None:
    """Joining every non-daemon thread instead hung forever on torch.compile's worker pool (a clean-clone run)."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(repo=str(REPO))], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == ["pool ran", "buffered, flushed at exitatexit ran"]
