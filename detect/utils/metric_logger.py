"""Training metrics to a JSONL file (one JSON object a line, easy to grep and plot) and TensorBoard.

Only the main process writes; other ranks get a logger that does nothing, so callers never branch.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from detect.utils.distributed import is_main_process


class MetricLogger:
    def __init__(self, out_dir: str | Path, tensorboard: bool = True, enabled: bool | None = None) -> None:
        self.enabled = is_main_process() if enabled is None else enabled
        self.out_dir = Path(out_dir)
        self._jsonl = None
        self._tb = None
        if not self.enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # Append: a resumed run continues the same file.
        self._jsonl = open(self.out_dir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            # Imported here on purpose: TensorBoard (and protobuf behind it) is heavy, and only a logging
            # rank with tensorboard=True needs it.
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))

    def log(self, step: int, metrics: dict[str, Any], split: str = "train") -> None:
        if not self.enabled:
            return
        scalars = {k: _plain(v) for k, v in metrics.items()}
        record = {"time": round(time.time(), 3), "step": int(step), "split": split, **scalars}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in scalars.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read back a metrics.jsonl (a torn last line from a crash is ignored)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
