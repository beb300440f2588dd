"""SIGTERM / SIGINT become a polite request: the loop finishes its step, checkpoints, then exits.

Cluster schedulers send SIGTERM before killing a job; turning it into a flag the training loop polls
means the last checkpoint is never older than one step when the job is pre-empted.
"""
from __future__ import annotations

import signal
import threading


class GracefulStop:
    """Context manager: `stop.requested` turns True on SIGTERM/SIGINT; a second signal exits at once."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = signals
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second signal: the user really means it
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
