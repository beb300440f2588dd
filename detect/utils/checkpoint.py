"""Checkpoints that survive a crash mid-write and resume a run exactly where it stopped.

A checkpoint is a plain dict of state_dicts, tensors and Python scalars, saved with torch.save to a
temporary file in the same directory and renamed over the target (atomic on POSIX), and read back
with torch.load(weights_only=True): nothing in it can execute code when loaded.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detect.errors import UserError
from detect.utils.files import atomic_write_bytes


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
