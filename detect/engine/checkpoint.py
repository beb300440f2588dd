"""Checkpoints that survive a crash mid-write and resume a run exactly where it stopped.

A checkpoint is a plain dict of state_dicts, tensors and Python scalars, saved with torch.save to a
temporary file in the same directory and renamed over the target (atomic on POSIX), and read back
with torch.load(weights_only=True): nothing in it can execute code when loaded.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detect.errors import UserError


def file_in(folder: str | Path, name: str) -> Path:
    """folder/name for a file name built from data (a class name, an image id); a name that would
    leave the folder (a path separator, '..', an absolute path) is refused, whatever the caller checked."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or os.path.isabs(name):
        raise UserError(f"{folder}: refusing to write {name!r}: the name would leave the output folder")
    return Path(folder) / name


def output_folder(path: str | Path) -> Path:
    """Create the output folder `path` (and its parents) now, before any expensive work, and check that
    files can be written in it: a file in the way or a read-only place is one UserError naming the path."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        where = err.filename or path
        raise UserError(f"{path}: cannot create the output folder ({where}: {err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{path}: the output folder is not writable")
    return path


def current_umask() -> int:
    """The process umask (read from /proc where possible: os.umask can only be read by setting it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, write) -> None:
    """Call write(file_object) on a temporary sibling of `path`, fsync it, then rename it over `path`.

    The file gets the permissions a plain open() would give (0666 minus the umask), not mkstemp's 0600.
    An OSError (read-only folder, a file where a folder should be, a full disk) leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write `state` (model/optimizer/scheduler state_dicts, step, rng, config...).

    A failed write (e.g. a full disk, which torch reports as a RuntimeError) is a UserError naming the
    file; the previous checkpoint stays as it was."""
    try:
        atomic_write_bytes(path, lambda fh: torch.save(state, fh))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: could not write the checkpoint ({first}); is the disk full? The previous "
                        "checkpoint, if any, is unchanged") from None
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None


def rng_state() -> dict[str, Any]:
    """Every RNG a training step can draw from, as weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "python": _python_rng_to_tensor(random.getstate()),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_python_rng_from_tensor(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_rng_to_tensor(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss}


def _python_rng_from_tensor(state: dict[str, Any]) -> tuple:
    return (state["version"], tuple(int(v) for v in state["internal"].tolist()), state["gauss"])


def latest_checkpoint(directory: str | Path, pattern: str = "*.pth") -> Path | None:
    """The newest finished checkpoint in `directory` (temporary files are never matched)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates = [p for p in directory.glob(pattern) if not p.name.startswith(".")]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns, default=None)
