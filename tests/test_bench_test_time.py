"""tools/bench_svd.py and tools/bench_test_time.py run end to end on the tiny BCCD checkpoint and print
one line per variant (the full-rank SVD variant scores as the detector itself)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args) -> str:
    done = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_svd_and_bench_test_time(bccd_checkpoint):
    checkpoint, config, _ = bccd_checkpoint
    out = run("tools/bench_svd.py", "--checkpoint", checkpoint, "--config", config, "--rank", "10000", "--rank", "1",
              "--vgg16-repeats", "0", "train.progress=false")
    rows = {m[0]: float(m[1]) for m in re.findall(r"^(full|svd 10000|svd 1)\s+[\d.]+\s+\d+%\s+([\d.]+)", out, re.M)}
    assert set(rows) == {"full", "svd 10000", "svd 1"}, out
    assert rows["svd 10000"] == rows["full"]
    out = run("tools/bench_test_time.py", "--config", config, "--checkpoint", checkpoint, "--checkpoint", checkpoint,
              "--scales", "64,96,128", "--single-scales", "128", "train.progress=false")
    names = re.findall(r"^(single scale \d+|scales \[64,96,128\] roi \d+|checkpoint 2 alone|ensemble of 2[^\d]*)", out, re.M)
    assert len(names) == 7, out
    scores = {m[0].strip(): float(m[1]) for m in re.findall(r"^(.+?)\s+([\d.]+)\s+[+-][\d.]+\s+[\d.]+\s+\d+%$", out, re.M)}
    assert scores["ensemble of 2, scale 96"] == scores["single scale 96"]  # a checkpoint with itself: the same
