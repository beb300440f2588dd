"""Synchronous data parallelism: 2 processes under real torchrun (gloo, CPU) with batch B each give the
same weights as 1 process with batch 2B over the same samples (the VGG paper's claim for its
multi-GPU training). A BN-free, dropout-free thin VGG-A makes the two runs compute the same function.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detect.config import load_config
from detect.data.classification import write_synthetic_image_folder
from detect.engine.classification_config import PretrainConfig
from detect.engine.classification_trainer import ClassificationTrainer, build_model
from detect.utils.checkpoint import load_checkpoint
from detect.utils.metric_logger import read_metrics

COMMON = ["model.name=vgg11", "model.width=0.0625", "model.options={init: kaiming, dropout: 0.0}",
          "data.augment.crop_size=32", "data.augment.scale=[32,40]", "data.workers=0", "optim.lr=0.01",
          "schedule.kind=constant", "run.epochs=2", "run.max_steps=4", "run.log_every=1", "run.seed=5",
          "run.tensorboard=false", "run.progress=false", "run.device=cpu"]


@pytest.mark.slow
@pytest.mark.usefixtures("torch_one_thread")  # as each torchrun rank (OMP_NUM_THREADS=1), whatever ran before
def test_two_process_ddp_equals_one_process_over_the_same_global_batch(tmp_path):
    root = write_synthetic_image_folder(tmp_path / "images", num_classes=3, train_per_class=4, val_per_class=2,
                                        size=40, seed=2)
    # 12 training images: 2 steps of 6 per epoch in both runs (one process x 6, or two x 3).
    single_out, ddp_out = tmp_path / "single", tmp_path / "ddp"
    cfg = load_config(PretrainConfig, overrides=COMMON + ["optim.batch_size=6", f"data.root={root}",
                                                          f"run.out_dir={single_out}"])
    ClassificationTrainer(cfg).fit()

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "detect.cli", "pretrain", "--no-eval", *COMMON, "optim.batch_size=3",
           f"data.root={root}", f"run.out_dir={ddp_out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    single, ddp = load_checkpoint(single_out / "last.pth"), load_checkpoint(ddp_out / "last.pth")
    assert single["step"] == ddp["step"] == 4
    assert sorted(p.name for p in ddp_out.glob("*.pth")) == ["best.pth", "last.pth"], "only rank 0 writes"
    torch.manual_seed(cfg.run.seed)  # the weights both runs started from, built as the trainer builds them
    initial = build_model(cfg, 3).state_dict()
    # float32 noise (a batch of 6 summed in another order than 3 + 3 all-reduced) reaches ~6e-6 in 4 steps;
    # the tolerance stays far below how far training moved the weights (> 1e-3, asserted below)
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-3, atol=2e-5, msg=lambda m: f"{key}: {m}")
    assert max((single["model"][k] - initial[k]).abs().max().item() for k in initial) > 1e-3, \
        "training moved the weights: the comparison is not between two untrained nets"
    # rank 0 logs the loss averaged over both processes: the same per-step losses as the single run
    single_losses = [r["loss"] for r in read_metrics(single_out / "metrics.jsonl") if r["split"] == "train"]
    ddp_losses = [r["loss"] for r in read_metrics(ddp_out / "metrics.jsonl") if r["split"] == "train"]
    assert len(single_losses) == 4
    assert ddp_losses == pytest.approx(single_losses, rel=1e-5)
