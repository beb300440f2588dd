"""`detect demo`, shortened (a few steps on a tiny synthetic set): every promised output is written."""
import json

import pytest

from detect.cli import main as cli

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SHORT = ["--images", "30", "train.steps=2", "model.train_scales=[64]", "model.test_scale=64", "model.max_size=128",
         "model.backbone=vgg11", "model.width=0.0625", "proposals.params={strategy: single}", "proposals.workers=0"]


def test_short_demo_writes_metrics_pr_curve_and_drawn_detections(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli(["demo", "--out", str(out), *SHORT]) == 0
    printed = capsys.readouterr().out
    assert "detect demo: VOC07 mAP@0.5" in printed and str(out / "metrics.json") in printed
    summary = json.loads((out / "metrics.json").read_text())
    assert {"voc07", "voc12", "coco"} <= set(summary) and summary["seconds"] > 0
    assert summary["voc07"]["num_images"] == 6 and 0.0 <= summary["voc07"]["mAP"] <= 1.0
    assert (out / "pr_curve.png").stat().st_size > 1000
    drawn = sorted(out.glob("detections_*.png"))
    assert len(drawn) == 6
    assert (out / "run" / "last.pth").is_file()
