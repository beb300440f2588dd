"""tools/gpu_check.sh: on a machine without CUDA it says so and runs nothing (exit 0); its Python part's
`--dry-run` runs the very code a GPU run takes (backbone steps against torchvision, AMP training and
inference of detector configs, torchrun) on the CPU with tiny sizes, bf16 autocast and channels_last."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
BCCD = REPO.parent / "shared" / "datasets" / "BCCD"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run for real")
def test_without_a_gpu_it_says_so_and_runs_nothing():
    done = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no GPU" in done.stdout and "nothing was run" in done.stdout
    assert not re.search(r"^(PASS|FAIL)", done.stdout, re.M), "something ran"
    # the Python part answers the same when called directly
    done = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "no GPU" in done.stdout and "PASS" not in done.stdout


def test_scripts_compile():
    subprocess.run([sys.executable, "-m", "py_compile", str(REPO / "tools" / "gpu_check.py")], check=True)
    subprocess.run(["bash", "-n", str(REPO / "tools" / "gpu_check.sh")], check=True)


@pytest.mark.skipif(not BCCD.is_dir(), reason="needs ../shared/datasets/BCCD")
def test_dry_run_exercises_every_kind_of_check(tmp_path):
    """A Fast R-CNN config with RoIAlign, one with RoIPool (demo), an R-CNN config with its separate box
    stage, one backbone pair, and torchrun with 2 CPU processes: every line passes."""
    configs = "bccd_resnet101_fast,demo,bccd_vgg16_rcnn"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--dry-run", "--configs", configs,
                           "--backbones", "googlenet_bn", "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = done.stdout
    lines = re.findall(r"^(PASS|FAIL|SKIP)\s+(\S+)\s+(\S+)\s+(.*)$", out, re.M)
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    kinds = {(section, name) for _, section, name, _ in lines}
    for name in configs.split(","):
        assert ("train", name) in kinds and ("test", name) in kinds
    assert ("backbone", "googlenet_bn") in kinds and ("torchrun", "bccd_resnet101_fast") in kinds
    assert all(status == "PASS" for status, *_ in lines), out
    assert all("img/s" in detail and "peak" in detail for *_, detail in lines)
    assert "2 processes (gloo)" in out
