"""The detection confusion matrix (classes, mislocalised, background, missed) on hand-made cases, and
`detect test`'s analysis files (PR curves, confusion matrix) beside metrics.json."""
import json
from pathlib import Path

import numpy as np
import pytest

from detect.cli import main as cli
from detect.data.dataset import DetectionDataset, ImageRecord
from detect.data.images import read_image_rgb
from detect.evaluation.confusion import confusion_matrix


def record(image_id, boxes, labels, difficult=None):
    n = len(labels)
    return ImageRecord(image_id, Path(f"{image_id}.png"), 200, 200, np.array(boxes, np.float32).reshape(n, 4),
                       np.array(labels), np.zeros(n, bool) if difficult is None else np.array(difficult), np.zeros(n, bool))


def test_each_kind_of_error_lands_in_its_cell():
    dataset = DetectionDataset([
        record("a", [[0, 0, 50, 50], [100, 100, 150, 150], [0, 100, 40, 140]], [1, 2, 1]),
        record("b", [[10, 10, 60, 60], [120, 0, 180, 60]], [2, 1], difficult=[False, True]),
    ], ["cat", "dog"])
    predictions = [
        {"boxes": [[0, 0, 50, 50],        # cat on the cat: correct
                   [1, 1, 50, 50],        # cat again: a duplicate -> mislocalised
                   [100, 100, 150, 150],  # cat on the dog: confusion [dog, cat]
                   [0, 100, 40, 115],     # cat on the second cat, IoU 0.375: mislocalised
                   [160, 0, 200, 30],     # dog on nothing: background
                   [0, 0, 50, 50]],       # scores 0.3: below the threshold, not counted
         "scores": [0.9, 0.8, 0.7, 0.6, 0.55, 0.3], "labels": [1, 1, 1, 1, 2, 2]},
        {"boxes": [[120, 0, 180, 60]], "scores": [0.9], "labels": [1]},  # on a difficult cat: ignored; the dog missed
    ]
    found = confusion_matrix(dataset, predictions, score_threshold=0.5)
    assert found["rows"] == ["cat", "dog", "mislocalised", "background"]
    assert found["columns"] == ["cat", "dog", "missed"]
    assert found["matrix"] == [[1, 0, 1],   # cats: one found, one missed (the mislocalised box did not find it)
                               [1, 0, 1],   # dogs: one taken for a cat, one missed
                               [2, 0, 0],   # a duplicate and a poor box, both cat detections
                               [0, 1, 0]]   # a dog detection on background
    rows = np.array(found["matrix"])
    assert rows[0].sum() == 2 and rows[1].sum() == 2, "a class's row sums to its non-difficult objects"


def test_detect_test_writes_pr_curves_and_the_confusion_matrix(bccd_checkpoint, tmp_path, capsys):
    checkpoint, config, _ = bccd_checkpoint
    out = tmp_path / "test"
    assert cli(["test", "--config", str(config), "--checkpoint", str(checkpoint), "--out", str(out),
                "--metrics", "voc07", "--confusion-threshold", "0.2"]) == 0
    assert "analysis:" in capsys.readouterr().out
    confusion = json.loads((out / "confusion_matrix.json").read_text())
    matrix = np.array(confusion["matrix"])
    assert confusion["score_threshold"] == 0.2 and matrix.shape == (5, 4)
    from detect.data.spec import build_dataset
    import yaml

    test = build_dataset(yaml.safe_load(Path(config).read_text())["data"]["test"])
    objects = [int(sum((r.labels == c).sum() for r in test.records)) for c in (1, 2, 3)]
    assert matrix[:3].sum(axis=1).tolist() == objects
    for name in ("pr_curves.png", "confusion_matrix.png"):
        assert read_image_rgb(out / name).shape[2] == 3
    assert (out / "metrics.json").is_file()
    assert cli(["test", "--config", str(config), "--checkpoint", str(checkpoint), "--out", str(out),
                "--confusion-threshold", "2"]) == 2
    assert "--confusion-threshold must be in [0, 1]" in capsys.readouterr().err
