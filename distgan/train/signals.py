"""Stop signals, installed as early as possible (this module imports nothing heavy)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

LAUNCHER_GONE = "the launcher's exit"


class StopSignals:
    """Remembers SIGTERM / SIGUSR1 (what SLURM sends before preemption or the time limit), SIGINT (Ctrl-C)
    and the death of the launcher that started this process.

    The handler only sets a flag; the loop acts on it at the next control check, where all ranks agree
    (one of them may have been signalled alone) to finish the step, checkpoint and exit with status 3.

    Ctrl-C is a stop like SIGTERM. A second Ctrl-C exits at once (killed by SIGINT, status 130 in a shell,
    no checkpoint: the previous one stays); one within `SIGINT_REPEAT_S` of the first counts as the same
    Ctrl-C, because the terminal sends it to every process and torch's launcher forwards its own copy.

    The launcher watch: `accelerate launch` has no handler for SIGUSR1, so a SIGUSR1 sent to it alone (SLURM's
    `--signal=USR1` when the launcher is the step's process) kills it and would leave the training processes
    running, orphaned. Under a launcher (torch's elastic agent or accelerate's plain one) a daemon thread checks
    once a second whether the parent process has changed and, if so, raises the stop flag: every process then
    checkpoints and exits, and none outlives its launcher by more than a control check and a checkpoint. A
    thread polling `os.getppid()` was chosen over `prctl(PR_SET_PDEATHSIG)`, which fires when the parent
    *thread* that forked us exits (not only the process), is Linux-only and cannot see a parent that died
    before it was set; forwarding signals from the launcher would need code in the launcher, which is not ours.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
    SIGINT_REPEAT_S = 2.0
    WATCH_EVERY_S = 1.0

    def __init__(self, watch_launcher: bool | None = None) -> None:
        self.received: str | None = None
        self._first_sigint: float | None = None
        self._pid = os.getpid()  # forked DataLoader workers inherit the handler; only this process acts
        self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        self._done = threading.Event()
        if watch_launcher is None:
            watch_launcher = under_launcher()
        if watch_launcher:
            parent = os.getppid()
            threading.Thread(target=self._watch, args=(parent,), name="distgan-launcher-watch", daemon=True).start()

    def _handle(self, signum: int, _frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked worker (the terminal's Ctrl-C reaches it too): ignore
            return
        if signum == signal.SIGINT:
            now = time.monotonic()
            if self._first_sigint is not None and now - self._first_sigint > self.SIGINT_REPEAT_S:
                print("distgan: second Ctrl-C: exiting now, without a checkpoint", file=sys.stderr, flush=True)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)  # die by SIGINT, as a shell expects of Ctrl-C
                return
            self._first_sigint = self._first_sigint or now
        self.received = self.received or signal.Signals(signum).name  # the first: job scripts repeat as SIGUSR1

    def _watch(self, parent: int) -> None:
        while not self._done.wait(self.WATCH_EVERY_S):
            if os.getppid() != parent:  # re-parented: the launcher is gone
                self.received = self.received or LAUNCHER_GONE
                return

    def restore(self) -> None:
        """Put back the handlers found before training (train() may run inside a longer program)."""
        self._done.set()
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def under_launcher() -> bool:
    """True when started by `accelerate launch` / torchrun (both set these for the processes they start)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "ACCELERATE_USE_CPU" in os.environ
