"""Progress bars (tqdm) that behave in a log file.

On a terminal, `progress_bar` is plain tqdm. With its output not a terminal (`detect train ... > log
2>&1`, a batch job), it is a `LogProgress`: each report is a line of its own, at most one every
LOG_INTERVAL seconds (and one at the start and one at the end), with no carriage returns and no
cursor movement; tqdm's usual redraws would fill a log with hundreds of `\\r` updates, and a bar
nested under another (an evaluation inside training) with `\\x1b[A` cursor-up escape sequences.
"""
from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL = 60.0  # seconds between report lines when the output is not a terminal


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or unusual streams
        return False


class LogProgress(tqdm):
    """tqdm for a log: a report is a whole line, written when progress was made and at least
    `mininterval` seconds passed since the previous line, or when the bar closes. No line is ever
    cleared or redrawn in place (nothing of tqdm's `\\r`, cursor moves or nested-bar positions)."""

    def __init__(self, *args, **kwargs) -> None:
        self._line_n: int | float | None = None  # self.n at the last line written
        self._line_t: float | None = None
        self._closing = False
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None) -> bool:
        if msg is not None:  # tqdm clearing its line ('') or hiding a bar: nothing to undo in a log
            return False
        now = self._time()
        if self.n == self._line_n and not (self._closing and self._line_n is None):
            return False
        if not self._closing and self._line_t is not None and now - self._line_t < self.mininterval:
            return False
        self._line_n, self._line_t = self.n, now
        self.fp.write(self.__str__() + "\n")
        getattr(self.fp, "flush", lambda: None)()
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear: a line once written stays (tqdm.write calls this around its message)."""

    def moveto(self, n: int) -> None:
        """No cursor movement in a log."""

    def close(self) -> None:
        """The last line (the final count), then tqdm's own bookkeeping with nothing more written."""
        if self.disable:
            return
        if hasattr(self, "last_print_t") and getattr(self, "sp", None) is not None:
            with self._lock:
                self._closing = True
                self._ema_dt = lambda: None  # the final line gives the overall rate
                self.display()
        self.leave = False  # tqdm's close then only "clears" (display(msg='')), which writes nothing here
        super().close()


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """tqdm(iterable, **kwargs) on a terminal; a LogProgress (a line at most every LOG_INTERVAL
    seconds, no escape sequences) when the output (kwargs' file, else stderr) is not a terminal."""
    if is_terminal(kwargs.get("file")):
        return tqdm(iterable, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL)
    kwargs.setdefault("maxinterval", max(LOG_INTERVAL, kwargs["mininterval"]))
    kwargs.pop("dynamic_ncols", None)
    return LogProgress(iterable, **kwargs)
