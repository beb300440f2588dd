"""tools/bench_full_scale.py on one small full-width case: the paper's GoogLeNet (full width, Fast R-CNN
mode, 2000 Selective Search proposals) trained one step on 2 BCCD images and tested on one, through
`detect train` / `detect test` subprocesses, at a reduced image scale (224 px) to stay short on a CPU.
A config whose effective settings are the same after the overrides is not run again."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BCCD = REPO.parent / "shared" / "datasets" / "BCCD"


@pytest.mark.slow
@pytest.mark.skipif(not BCCD.is_dir(), reason="needs ../shared/datasets/BCCD")
def test_full_width_fast_config_trains_and_tests(tmp_path):
    out = tmp_path / "table.json"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "bench_full_scale.py"),
                           "--configs", "voc2007_googlenet_fast,bccd_googlenet_fast", "--images", "2",
                           "--test-images", "1", "--steps", "1", "--scale", "224", "--threads", "1",
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=1800, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first, second = json.loads(out.read_text())["rows"]
    assert first["config"] == "voc2007_googlenet_fast" and first["ok"], first
    assert first["model"].startswith("googlenet fast, [224]/224 px")
    assert first["steps"] == "1 x 2 img"
    assert math.isfinite(first["loss"]) and first["loss"] > 0
    assert first["train_s_step"] > 0 and first["test_s_image"] > 0
    assert first["train_peak_gb"] > 0.1 and first["test_peak_gb"] > 0.1  # a full-width GoogLeNet's weights alone
    assert 0 < first["proposals"] <= 2000
    assert second["same_as"] == "voc2007_googlenet_fast" and second["ok"]  # identical after the overrides
    table = [line for line in done.stdout.splitlines() if line.startswith("| voc2007_googlenet_fast ")]
    assert len(table) == 1 and table[0].rstrip().endswith("| PASS |"), done.stdout[-2000:]
    assert (tmp_path / "table.md").read_text().count("PASS") == 2
