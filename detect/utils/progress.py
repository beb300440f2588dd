"""Progress bars (tqdm) that behave in a log file: with stderr not a terminal, a bar redraws at most
once every LOG_INTERVAL seconds instead of ten times a second, so a redirected log holds a few lines,
not hundreds of carriage-return updates."""
from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL = 60.0  # seconds between redraws when the output is not a terminal


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or unusual streams
        return False


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """tqdm(iterable, **kwargs), throttled to one redraw per LOG_INTERVAL when not writing to a terminal."""
    if not is_terminal(kwargs.get("file")):
        kwargs.setdefault("mininterval", LOG_INTERVAL)
        kwargs.setdefault("maxinterval", max(LOG_INTERVAL, kwargs["mininterval"]))
        kwargs.pop("dynamic_ncols", None)
    return tqdm(iterable, **kwargs)
