"""Stop signals, installed as early as possible (this module imports nothing heavy)."""

from __future__ import annotations

import signal
from typing import Any


class StopSignals:
    """Remembers SIGTERM / SIGUSR1 (what SLURM sends before preemption or the time limit).

    The handler only sets a flag; the loop acts on it at the next control check, where all ranks agree
    (one of them may have been signalled alone) to finish the step, checkpoint and exit with status 3.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: str | None = None
        self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received = self.received or signal.Signals(signum).name  # the first: job scripts repeat as SIGUSR1

    def restore(self) -> None:
        """Put back the handlers found before training (train() may run inside a longer program)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
