"""tools/bench_proposal_loader.py runs (2 BCCD images, 2 steps, a tiny detector): the real loader's
batches equal the in-memory copy's, and both rates and their ratio are printed."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not (REPO.parent / "shared" / "datasets" / "BCCD").is_dir(), reason="needs ../shared/datasets/BCCD")
def test_bench_runs_on_two_images():
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_proposal_loader.py"), "--images", "2", "--steps", "2",
         "--rounds", "1", "--workers", "1", "model.width=0.0625", "model.train_scales=[64]", "model.test_scale=64",
         "model.max_size=128", "proposals.params={strategy: single, max_side: 128}", "proposals.max_per_image=100",
         "proposals.workers=0"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 images/step, 2 images, 1 loader workers" in done.stdout
    assert re.search(r"round 1: real loader [\d.]+ steps/s, in memory [\d.]+ steps/s, ratio [\d.]+; same batches: yes",
                     done.stdout), done.stdout
    assert re.search(r"median: .* ratio [\d.]+ \(target >= 0.9: (met|NOT met)\)", done.stdout)
