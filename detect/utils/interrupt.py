"""SIGTERM / SIGINT become a polite request: the loop finishes its step, checkpoints, then exits.

Cluster schedulers send SIGTERM before killing a job; turning it into a flag the training loop polls
means the last checkpoint is never older than one step when the job is pre-empted. Once the checkpoint
is written the trainer raises `Interrupted`, which `detect/cli.py` turns into exit status 128 + the
signal's number (130 for SIGINT, 143 for SIGTERM): a stopped run is not a finished one, so
`detect train ... && detect test ...` does not go on to test a half-trained model. DataLoader workers
ignore both signals (every loader's worker_init_fn is detect.data.samplers.init_loader_worker):
a signal to the whole process group must not kill the loader before the main process has saved.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path


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


class Interrupted(Exception):
    """Raised by a trainer after a signalled stop has written its checkpoint; `detect` exits `exit_code`.

    `exit_code` is 128 + the signal's number, as a shell reports a process killed by it (130 for
    SIGINT, 143 for SIGTERM; 143 when another process of a distributed run was the one signalled).
    `resume_flag` is what to add to the same command to continue (None: run it again as it is).
    """

    def __init__(self, signal_name: str | None, checkpoint: str | Path | None = None, step: int | None = None,
                 resume_flag: str | None = "--resume") -> None:
        self.signal_name = signal_name or "SIGTERM"
        self.exit_code = 128 + int(getattr(signal.Signals, self.signal_name, signal.SIGTERM))
        self.checkpoint = checkpoint
        self.step = step
        self.resume_flag = resume_flag
        where = f" at step {step}" if step is not None else ""
        saved = f"; checkpoint {checkpoint}" if checkpoint is not None else ""
        how = f"add {resume_flag} to the same command" if resume_flag else "run the same command again"
        by = signal_name or "a signal to another process"
        super().__init__(f"stopped by {by}{where}{saved}; to continue, {how}")
