"""Under real torchrun (2 processes, gloo, CPU), each of the three trainers, stopped mid-run and resumed
with --resume, ends where an uninterrupted run ends: the same per-step losses, weights and, rank by
rank, random state; and the two ranks' random streams (regions, dropout) differ after the resume.

Each rank draws from its own global RNG during training (the detector's region sampling, dropout in
the classifier and in the MultiBox head), so a resume that gave every rank rank 0's saved state, or
that left the ranks' streams equal, trains other weights than the uninterrupted run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detect.data.classification import write_synthetic_image_folder
from detect.utils.checkpoint import load_checkpoint
from detect.utils.metric_logger import read_metrics
from detector_setup import tiny_config

pytestmark = pytest.mark.slow


def torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "detect.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def detection(tmp: Path, out: Path) -> tuple[list[str], str, str]:
    """(command and options, option that stops early, option for the full length)"""
    config = tiny_config(tmp / out.name, tmp / "proposals", train={"steps": 4, "fit_check_images": 0, "out_dir": str(out)})
    return ["train", "--config", str(config)], "train.steps=2", "train.steps=4"  # 4 steps a (per-rank) epoch of 9


def classification(tmp: Path, out: Path) -> tuple[list[str], str, str]:
    root = tmp / "images"
    if not root.exists():
        write_synthetic_image_folder(root, num_classes=3, train_per_class=4, val_per_class=2, size=40, seed=2)
    # 12 images, 6 per rank in batches of 3: 2 steps an epoch; vgg11's fc6/fc7 dropout draws from the RNG
    options = ["model.name=vgg11", "model.width=0.0625", "model.options={init: kaiming}", "data.augment.crop_size=32",
               "data.augment.scale=[32,40]", "data.workers=0", "optim.lr=0.01", "optim.batch_size=3",
               "schedule.kind=constant", "run.epochs=2", "run.log_every=1", "run.seed=5", "run.tensorboard=false",
               "run.progress=false", "run.device=cpu", f"data.root={root}", f"run.out_dir={out}"]
    return ["pretrain", "--no-eval", *options], "run.max_steps=1", "run.max_steps=null"


def multibox(tmp: Path, out: Path) -> tuple[list[str], str, str]:
    config = tmp / "empty.yaml"
    config.write_text("{}\n")
    # 12 images, 6 per rank in batches of 4: 2 steps an epoch (4 + 2 images); the head's dropout draws
    options = ["data.train=shapes:20:0:train", "model.backbone=googlenet_bn", "model.width=0.125", "model.num_priors=8",
               "model.input_size=64", "optim.optimizer=adamw", "optim.lr=0.003", "optim.batch_size=4",
               "optim.epochs=2", "run.device=cpu", "run.log_every=1", "run.amp=false", "run.progress=false",
               f"run.out_dir={out}"]
    return ["train-multibox", "--config", str(config), *options], "run.max_steps=1", "run.max_steps=null"


def train_losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"}


@pytest.mark.parametrize("task", [detection, classification, multibox])
def test_interrupted_and_resumed_equals_uninterrupted_and_ranks_keep_their_own_streams(tmp_path, task):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    command, stop_early, full_length = task(tmp_path, straight)
    torchrun(*command, full_length)
    command, stop_early, full_length = task(tmp_path, stopped)
    torchrun(*command, stop_early)
    at_stop = load_checkpoint(stopped / "last.pth")
    torchrun(*command, full_length, "--resume")

    a, b = load_checkpoint(straight / "last.pth"), load_checkpoint(stopped / "last.pth")
    assert 0 < at_stop["step"] < a["step"] == b["step"]
    assert (a["epoch"], a["epoch_position"]) == (b["epoch"], b["epoch_position"])
    assert train_losses(stopped) == pytest.approx(train_losses(straight), rel=1e-6, abs=0)
    assert sorted(train_losses(straight)) == list(range(1, a["step"] + 1))
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=1e-6, msg=key)

    # every rank's random state is in the checkpoint, the ranks' differ, and each continued its own
    assert len(at_stop["rng"]) == len(a["rng"]) == len(b["rng"]) == 2
    assert not torch.equal(at_stop["rng"][0]["torch"], at_stop["rng"][1]["torch"])
    assert not torch.equal(b["rng"][0]["torch"], b["rng"][1]["torch"]), "the ranks' streams differ after the resume"
    for rank in (0, 1):
        assert torch.equal(a["rng"][rank]["torch"], b["rng"][rank]["torch"]), f"rank {rank} continued another stream"
