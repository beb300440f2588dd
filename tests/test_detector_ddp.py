"""The detector trains under real torchrun (2 processes, gloo, CPU) and evaluates with predictions
gathered from both processes; only rank 0 writes the checkpoint and the log."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from detect.utils.checkpoint import load_checkpoint
from detect.utils.metric_logger import read_metrics
from detector_setup import tiny_config


@pytest.mark.slow
def test_two_process_training_and_gathered_evaluation(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "proposals", data={"val": "shapes:30:0:val"})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "detect.cli", "train", "--config", str(config), "train.steps=3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    checkpoint = load_checkpoint(tmp_path / "run" / "last.pth")
    assert checkpoint["step"] == 3
    assert checkpoint["epoch_position"] == 6, "each process took 2 images a step from its own shard"
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3], "one log line a step: rank 0 only"
    (val,) = [r for r in records if r["split"] == "val"]
    assert 0.0 <= val["voc07_mAP"] <= 1.0
    assert done.stdout.count("voc07 mAP") == 1, "rank 0 prints the evaluation once"
