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
    table = dict(re.findall(r"^(ours|torchvision FasterRCNN|ours scoring its boxes)\s+([\d.]+)\s+\d+\s+\d+$",
                            done.stdout, re.M))
    assert set(table) == {"ours", "torchvision FasterRCNN", "ours scoring its boxes"}, done.stdout[-2000:]
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


def test_scores_on_boxes_keeps_the_boxes_and_gives_our_probability_of_each_label(bccd_checkpoint):
    import numpy as np
    import torch

    from detect.data.spec import build_dataset
    from detect.engine.detection_inference import load_detector

    bench = load_bench()
    checkpoint, config, _ = bccd_checkpoint
    model, cfg, classes = load_detector(checkpoint, device="cpu")
    dataset = build_dataset(cfg.data.test, classes)
    box = [[30.0, 40.0, 200.0, 180.0]]
    # the same box once per class: our probabilities of the classes, which leave the rest to background
    found = [{"boxes": np.array(box * len(classes)), "labels": np.arange(1, len(classes) + 1),
              "scores": np.full(len(classes), 0.9)}]
    rescored = bench.scores_on_boxes(model, dataset, found)[0]
    np.testing.assert_array_equal(rescored["boxes"], found[0]["boxes"])
    np.testing.assert_array_equal(rescored["labels"], found[0]["labels"])
    with torch.no_grad():
        probabilities, _ = model.region_predictions([dataset[0][0]], [torch.tensor(box)])[0]
    np.testing.assert_allclose(rescored["scores"], probabilities[0, 1:].numpy(), rtol=1e-5)
    assert 0.0 < rescored["scores"].sum() < 1.0 and not np.allclose(rescored["scores"], 0.9)


def load_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_peer", ROOT / "tools" / "bench_vs_faster_rcnn.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_merge_flipped_mirrors_back_and_suppresses_the_mirrors_duplicates():
    import torch

    found = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 40.0], [50.0, 5.0, 70.0, 25.0]]),
             "scores": torch.tensor([0.9, 0.4]), "labels": torch.tensor([1, 2])}
    # the mirror (width 100) sees the first object again, a bit more sure, and one the image missed
    mirrored = {"boxes": torch.tensor([[70.0, 10.0, 90.0, 40.0], [0.0, 60.0, 20.0, 80.0]]),
                "scores": torch.tensor([0.95, 0.6]), "labels": torch.tensor([1, 1])}
    merged = load_bench().merge_flipped(found, mirrored, 100, 0.5, 100)
    torch.testing.assert_close(merged["boxes"], torch.tensor([[10.0, 10.0, 30.0, 40.0], [80.0, 60.0, 100.0, 80.0],
                                                              [50.0, 5.0, 70.0, 25.0]]))
    torch.testing.assert_close(merged["scores"], torch.tensor([0.95, 0.6, 0.4]))
    assert merged["labels"].tolist() == [1, 1, 2]
    assert len(load_bench().merge_flipped(found, mirrored, 100, 0.5, 2)["scores"]) == 2


def test_bench_with_test_flip_scores_both_sides_with_and_without_it(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "proposals", "fast", train={"steps": 2, "threads": 1})
    out = tmp_path / "bench"
    done = subprocess.run([sys.executable, "tools/bench_vs_faster_rcnn.py", "--config", str(config), "--out", str(out),
                           "test.flip=true"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = re.findall(r"^((?:ours|torchvision FasterRCNN).*?)\s+[\d.]+\s+\d+\s+\d+$", done.stdout, re.M)
    assert rows == ["ours", "ours without test flip", "torchvision FasterRCNN", "torchvision FasterRCNN + test flip",
                    "ours scoring its boxes"], done.stdout[-2000:]
