"""matplotlib without a display, and plots written whole or not at all (temp file + rename)."""
from __future__ import annotations

from pathlib import Path

from detect.utils.files import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend: works on headless machines and in worker processes."""
    # Imported here on purpose: matplotlib is heavy to import and only a run that draws a plot needs it;
    # the backend must be chosen before pyplot is first imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    fig.tight_layout()
    atomic_write_bytes(path, lambda fh: fig.savefig(fh, format=path.suffix.lstrip(".") or "png", dpi=dpi))
    pyplot().close(fig)
    return path
