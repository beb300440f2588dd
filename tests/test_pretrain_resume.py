"""`detect pretrain` resumes exactly: a run stopped mid-epoch and resumed equals an uninterrupted one.

Stopping happens at an optimizer step (run.max_steps, the same path SIGTERM/SIGINT take); the
resumed run must reproduce the same per-step losses and bit-identical weights on CPU, which needs
the sampler order, per-sample augmentation, dropout RNG, momentum buffers, LR schedule and (for
GoogLeNet) Polyak average all restored.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detect.config import load_config
from detect.data.classification import write_synthetic_image_folder
from detect.engine.classification_config import PretrainConfig
from detect.engine.classification_trainer import ClassificationTrainer
from detect.utils.checkpoint import load_checkpoint
from detect.utils.metric_logger import read_metrics

# A thin VGG-A with dropout, 32-pixel crops, gradient accumulation over 2 micro-batches (of 4, 4, 4, 3
# images: 2 steps an epoch), 2 DataLoader workers.
VGG_SMALL = ["model.name=vgg11", "model.width=0.0625", "model.options={init: kaiming}",
             "data.augment.crop_size=32", "data.augment.scale=[32,40]", "data.workers=2",
             "optim.lr=0.005", "optim.batch_size=4", "optim.accumulate=2", "schedule.kind=plateau",
             "schedule.patience=0", "run.epochs=2", "run.log_every=1", "run.checkpoint_every=2", "run.tensorboard=false",
             "run.progress=false", "run.seed=3"]
# GoogLeNet with its auxiliary heads (they need 224 input), Polyak averaging and the step decay; one epoch
# of 5 steps, stopped after 3.
GOOGLENET_SMALL = ["model.name=googlenet", "model.width=0.0625", "data.augment.crop=area", "data.augment.crop_size=224",
                   "data.augment.scale=[224,240]", "data.workers=0", "optim.lr=0.01", "optim.batch_size=3",
                   "schedule.kind=step", "schedule.step_epochs=1", "run.polyak_decay=0.9", "run.epochs=1",
                   "run.log_every=1", "run.tensorboard=false", "run.progress=false", "eval.scale=240"]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    return write_synthetic_image_folder(tmp_path_factory.mktemp("resume") / "images", num_classes=3,
                                        train_per_class=5, val_per_class=2, size=48, seed=1)


def run(root: Path, out_dir: Path, base: list[str], extra: list[str] = (), resume: bool = False):
    cfg = load_config(PretrainConfig, overrides=base + [f"data.root={root}", f"run.out_dir={out_dir}", *extra])
    state = ClassificationTrainer(cfg, resume=resume).fit()
    return state


def losses(out_dir: Path) -> dict[int, float]:
    """step -> training loss (a re-logged step after a resume keeps its last value)."""
    return {r["step"]: r["loss"] for r in read_metrics(out_dir / "metrics.jsonl") if r["split"] == "train"}


@pytest.mark.parametrize("base,stop_at", [pytest.param(VGG_SMALL, 1, marks=pytest.mark.slow, id="vgg-mid-epoch1"),
                                           pytest.param(VGG_SMALL + ["data.workers=0"], 3, id="vgg-mid-epoch2"),
                                           pytest.param(GOOGLENET_SMALL, 3, marks=pytest.mark.slow, id="googlenet-polyak")])
def test_resumed_run_equals_uninterrupted_run(image_root, tmp_path, base, stop_at):
    full = run(image_root, tmp_path / "full", base)
    stopped = run(image_root, tmp_path / "stopped", base, [f"run.max_steps={stop_at}"])
    epochs = int(next(o for o in reversed(base) if o.startswith("run.epochs=")).split("=")[1])
    assert stopped.step == stop_at and stopped.epoch < epochs, "the run stopped where asked, before the end"
    assert load_checkpoint(tmp_path / "stopped" / "last.pth")["step"] == stop_at
    resumed = run(image_root, tmp_path / "stopped", base, resume=True)

    assert resumed.step == full.step and resumed.epoch == full.epoch == epochs
    reference, continued = losses(tmp_path / "full"), losses(tmp_path / "stopped")
    assert sorted(reference) == list(range(1, full.step + 1))
    assert continued == reference, "per-step losses differ after resuming"
    a = load_checkpoint(tmp_path / "full" / "last.pth")
    b = load_checkpoint(tmp_path / "stopped" / "last.pth")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    if a["ema"] is not None:
        for key in a["ema"]:
            assert torch.equal(a["ema"][key], b["ema"][key]), key
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert [h["val_top1_accuracy"] for h in a["history"]] == [h["val_top1_accuracy"] for h in b["history"]]


@pytest.mark.slow
def test_sigterm_to_the_process_group_writes_a_checkpoint_and_the_run_resumes(image_root, tmp_path):
    """A real SIGTERM to `detect pretrain` and its 2 loader workers (as Ctrl-C or a cluster scheduler
    sends it): it finishes the step, checkpoints, says so and exits 143; the run then resumes."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "detect.cli", "pretrain", *VGG_SMALL, "run.epochs=500",
            f"data.root={image_root}", f"run.out_dir={out}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and len(losses(out)) >= 3):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output
    assert "stopped by SIGTERM" in output and f"checkpoint {out / 'last.pth'}" in output and "--resume" in output
    assert "Traceback" not in output and "DataLoader worker" not in output
    ckpt = load_checkpoint(out / "last.pth")
    assert ckpt["step"] >= 3 and ckpt["epoch"] < 500
    assert max(losses(out)) == ckpt["step"], "the checkpoint holds the last step trained"
    state = run(image_root, out, VGG_SMALL, ["run.epochs=500", f"run.max_steps={ckpt['step'] + 2}"], resume=True)
    assert state.step == ckpt["step"] + 2
