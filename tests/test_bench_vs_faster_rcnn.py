"""tools/bench_vs_faster_rcnn.py end to end on the tiny synthetic config: both detectors trained and scored,
the side-by-side table printed, and each side's detections and confusion matrix written for `detect eval`."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from detect import cli
from detector_setup import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_bench_trains_both_and_writes_each_sides_detections(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "proposals", "fast", train={"steps": 2, "threads": 1})
    out = tmp_path / "bench"
    done = subprocess.run([sys.executable, "tools/bench_vs_faster_rcnn.py", "--config", str(config), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = dict(re.findall(r"^(ours|torchvision FasterRCNN)\s+([\d.]+)\s+\d+\s+\d+$", done.stdout, re.M))
    assert set(table) == {"ours", "torchvision FasterRCNN"}, done.stdout[-2000:]
    summary = json.loads((out / "bench_vs_faster_rcnn.json").read_text())
    for side, name in (("ours", "ours"), ("peer", "torchvision FasterRCNN")):
        assert summary[name]["voc07_mAP"] == pytest.approx(float(table[name]), abs=5e-5)
        confusion = json.loads((out / side / "confusion_matrix.json").read_text())
        assert confusion["rows"][-2:] == ["mislocalised", "background"] and confusion["columns"][-1] == "missed"
        scored = tmp_path / f"{side}_eval.json"  # detect eval reads the side's detections and finds its mAP again
        assert cli.main(["eval", "--data", "shapes:30:0:test", "--results", str(out / side / "detections.json"),
                         "--json", str(scored)]) == 0
        assert json.loads(scored.read_text())["mAP"] == pytest.approx(summary[name]["voc07_mAP"], abs=1e-6)


def test_bench_trains_the_peer_once_per_weight_average(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "proposals", "fast", train={"steps": 2, "threads": 1})
    out = tmp_path / "bench"
    done = subprocess.run([sys.executable, "tools/bench_vs_faster_rcnn.py", "--config", str(config), "--out", str(out),
                           "--skip", "ours", "--peer-weight-average", "0.5,none"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = re.findall(r"^(torchvision FasterRCNN wa \S+)\s+[\d.]+\s+\d+\s+\d+$", done.stdout, re.M)
    assert rows == ["torchvision FasterRCNN wa 0.5", "torchvision FasterRCNN wa none"], done.stdout[-2000:]
    averaged, plain = ((out / folder / "detections.json").read_text() for folder in ("peer_wa_0.5", "peer_wa_none"))
    assert averaged != plain, "the averaged peer scores with other weights than the last ones"
