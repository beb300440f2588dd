"""Signals, as a user or a scheduler sends them, to real `detect` processes: a stopped run writes its
checkpoint and exits 128 + the signal (130 SIGINT, 143 SIGTERM), never 0; loader workers survive a
signal to the whole process group; `detect demo --resume` finishes an interrupted demo exactly."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detect.cli import main as cli
from detect.data.samplers import init_loader_worker
from detect.utils.checkpoint import load_checkpoint
from detect.utils.interrupt import GracefulStop, Interrupted
from detector_setup import tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(args: list[str]) -> subprocess.Popen:
    """`detect ARGS` in its own process group (as a shell runs a foreground job)."""
    return subprocess.Popen([sys.executable, "-m", "detect.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=ENV)


def signal_group_after_first_step(proc: subprocess.Popen, metrics: Path, sig: signal.Signals) -> tuple[str, str]:
    """Wait until training has logged a step (so the stop handler is in place), signal the whole group."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be signalled: " + "".join(proc.communicate())
    os.killpg(proc.pid, sig)
    return proc.communicate(timeout=120)


def test_interrupted_maps_signals_to_exit_codes():
    assert Interrupted("SIGINT").exit_code == 130 and Interrupted("SIGTERM").exit_code == 143
    assert Interrupted(None).exit_code == 143  # another rank was signalled
    assert "--resume" in str(Interrupted("SIGINT", "x/last.pth", 3)) and "x/last.pth" in str(Interrupted("SIGINT", "x/last.pth"))


def test_sigterm_to_the_group_of_detect_train_with_two_loader_workers_checkpoints_and_exits_143(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "proposals", data={"workers": 2},
                         train={"steps": 5000, "checkpoint_every": 0, "log_every": 1})
    proc = start(["train", "--config", str(config)])
    out, err = signal_group_after_first_step(proc, tmp_path / "run" / "metrics.jsonl", signal.SIGTERM)
    assert proc.returncode == 143, out + err
    assert "Traceback" not in err and "DataLoader worker" not in err, err
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pth")
    assert 1 <= checkpoint["step"] < 5000
    line = [ln for ln in err.splitlines() if "stopped by SIGTERM" in ln]
    assert len(line) == 1 and f"at step {checkpoint['step']}" in line[0] and str(tmp_path / "run" / "last.pth") in line[0]
    assert line[0].rstrip().endswith("--resume"), "it says how to resume"
    assert "mAP" not in out, "a stopped run is not evaluated"


# the shortened demo of test_detector_demo.py, long enough to be interrupted after its first step
DEMO = ["--images", "30", "train.steps=6", "train.log_every=1", "train.progress=false", "model.train_scales=[64]",
        "model.test_scale=64", "model.max_size=128", "model.backbone=vgg11", "model.width=0.0625",
        "proposals.params={strategy: single}", "proposals.workers=0"]
RESULT = re.compile(r"detect demo: VOC07 mAP@0\.5 (\S+), VOC12 (\S+), COCO AP (\S+) on (\d+) held-out images")


def test_ctrl_c_stops_the_demo_without_a_result_and_resume_finishes_it_like_an_uninterrupted_demo(tmp_path, capsys):
    stopped = tmp_path / "stopped"
    proc = start(["demo", "--out", str(stopped), *DEMO])
    out, err = signal_group_after_first_step(proc, stopped / "run" / "metrics.jsonl", signal.SIGINT)
    assert proc.returncode == 130, out + err
    assert not RESULT.search(out) and "evaluating" not in out and not (stopped / "metrics.json").exists()
    assert "stopped by SIGINT" in err and "detect demo --out" in err and err.rstrip().endswith("--resume")
    step = load_checkpoint(stopped / "run" / "last.pth")["step"]
    assert 1 <= step < 6

    assert cli(["demo", "--out", str(stopped), *DEMO, "--resume"]) == 0
    resumed = capsys.readouterr().out
    assert f"resumed from {stopped / 'run' / 'last.pth'} at step {step}" in resumed
    assert cli(["demo", "--out", str(tmp_path / "straight"), *DEMO]) == 0
    straight = capsys.readouterr().out
    assert RESULT.search(resumed) and RESULT.search(resumed).groups() == RESULT.search(straight).groups()
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("stopped", "straight"))
    assert load_checkpoint(stopped / "run" / "last.pth")["step"] == 6
    for metric in ("voc07", "voc12", "coco"):
        assert a[metric]["mAP"] == pytest.approx(b[metric]["mAP"], abs=1e-6), metric


def test_demo_resume_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert cli(["demo", "--out", str(tmp_path / "none"), *DEMO, "--resume"]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_sigterm_to_detect_train_multibox_checkpoints_and_exits_143(tmp_path):
    out_dir = tmp_path / "multibox"
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    proc = start(["train-multibox", "--config", str(config), "data.train=shapes:40:0:train", "data.workers=2",
                  "model.backbone=googlenet_bn", "model.width=0.125", "model.num_priors=8", "model.input_size=64",
                  "optim.batch_size=2", "optim.epochs=100", "run.device=cpu", "run.log_every=1", "run.amp=false",
                  f"run.out_dir={out_dir}"])
    out, err = signal_group_after_first_step(proc, out_dir / "metrics.jsonl", signal.SIGTERM)
    assert proc.returncode == 143, out + err
    assert "Traceback" not in err and "MultiBox checkpoint:" not in out
    state = load_checkpoint(out_dir / "last.pth")
    assert state["step"] >= 1 and not state["finished"] and state["epoch"] < 100
    assert "stopped by SIGTERM" in err and err.rstrip().endswith("--resume")


class Pids(torch.utils.data.Dataset):
    """Item i is (i, the pid of the worker that loaded it), a little slowly."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int):
        time.sleep(0.02)
        return index, os.getpid()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_loader_workers_outlive_a_signal_the_main_process_decides(sig):
    loader = torch.utils.data.DataLoader(Pids(), batch_size=None, num_workers=2, worker_init_fn=init_loader_worker)
    seen, pids = [], set()
    batches = iter(loader)  # workers forked with Python's own SIGINT handler (KeyboardInterrupt) in place
    with GracefulStop() as stop:  # as in the trainers: the main process only notes the request
        for index, pid in batches:
            seen.append(index)
            pids.add(pid)
            if len(pids) == 2 and not stop.requested:
                for worker in pids:
                    os.kill(worker, sig)
                os.kill(os.getpid(), sig)
    assert stop.requested and stop.signal_name == sig.name
    assert sorted(seen) == list(range(24)), "every worker lived on to deliver its items"


WARM_OPENCV_THEN_LOAD = """
import cv2, numpy, torch
from detect.data.samplers import init_loader_worker
image = numpy.random.rand(1500, 1500, 3).astype(numpy.float32)
cv2.GaussianBlur(image, (31, 31), 5)  # the parent's OpenCV thread pool is running when the workers fork
loader = torch.utils.data.DataLoader(list(range(8)), batch_size=None, num_workers=2,
                                     worker_init_fn=init_loader_worker)
print(sorted(int(item) for item in loader))
"""


def test_loader_workers_start_after_the_parents_opencv_pool_has_run():
    """cv2.setNumThreads in a forked worker deadlocked (OpenCV 5.1) once the parent had used its pool."""
    done = subprocess.run([sys.executable, "-c", WARM_OPENCV_THEN_LOAD], capture_output=True, text=True,
                          timeout=120, env=ENV)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(list(range(8)))


def test_every_dataloader_in_the_package_ignores_stop_signals_in_its_workers():
    """Each DataLoader(...) in detect/ passes worker_init_fn (init_loader_worker: SIGINT/SIGTERM ignored)."""
    import ast

    package = Path(__file__).resolve().parents[1] / "detect"
    calls = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "DataLoader":
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((f"{path.relative_to(package.parent)}:{node.lineno}", keywords.get("worker_init_fn")))
    assert len(calls) >= 5
    assert all(init == "init_loader_worker" for _, init in calls), [where for where, init in calls if init != "init_loader_worker"]
