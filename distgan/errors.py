"""User-facing errors and exit statuses; entry points print each error as a single line.

Exit statuses of `launch/train.py` (documented in the README; job scripts rely on them):
    0  finished
    2  bad input (config, data, checkpoint): fix what the message names
    3  stopped by SIGTERM/SIGUSR1 (preemption, time limit) after writing a checkpoint: resume with --resume latest
    4  training diverged: too many steps in a row had non-finite losses or gradients
    5  another process failed or stopped answering
"""

import atexit
import os
import sys
import threading
from typing import NoReturn

EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 3
EXIT_DIVERGED = 4
EXIT_PEER_FAILED = 5


class DistganError(Exception):
    """Bad input (config, data, checkpoint) that the user can fix; the message says how."""

    exit_status = EXIT_BAD_INPUT


class ConfigError(DistganError):
    """A config key is unknown, mistyped or impossible."""


class TrainingDiverged(DistganError):
    """Losses or gradients stayed non-finite for `train.max_nonfinite` steps in a row."""

    exit_status = EXIT_DIVERGED


class PeerFailed(DistganError):
    """A collective failed: another rank died, or did not answer within `train.collective_timeout_s`."""

    exit_status = EXIT_PEER_FAILED

    @staticmethod
    def describe(e: BaseException) -> str:
        """One line for a gloo/NCCL error caused by another process."""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (
            "another process failed or stopped answering (see its log; train.collective_timeout_s bounds the "
            f"wait): {first[:200]}"
        )


def exit_process(status: int) -> NoReturn:
    """End this process with `status` after Python's own exit work, without tearing the interpreter down.

    What `sys.exit` does first is done here too, in its order: `threading._shutdown` (thread pools told to
    stop, e.g. torch.compile's workers, then the non-daemon threads joined), the `atexit` handlers (W&B's run
    finish, distgan's process-group destroy, DataLoader workers' kill), stdout and stderr flushed. Then
    `os._exit`, exactly as multiprocessing ends its child processes. Interpreter teardown is skipped
    because gloo can abort it: its worker threads may take the GIL while Python is being finalized, and the
    process dies of SIGABRT ("terminate called without an active exception") instead of exiting with its
    status: 3 of 30 two-process exits with DDP alive at exit, even after destroying the process group.
    """
    threading._shutdown()  # not a join of every non-daemon thread: pools must be told to stop first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone (a vanished terminal): nothing more can be said
            pass
    os._exit(status)
