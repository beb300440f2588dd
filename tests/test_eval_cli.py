"""`detect eval`: prints the per-class table with metric and difficult rule, writes the same numbers as JSON."""
import json
from pathlib import Path

import numpy as np
import pytest

from detect import cli
from detect.data.spec import build_dataset
from detect.evaluation.evaluate import evaluate
from detect.evaluation.results import write_coco_results, write_voc_results

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    if BCCD.is_dir():
        return f"voc:{BCCD}:test"
    from detect.data.shapes import write_shapes

    return f"voc:{write_shapes(tmp_path_factory.mktemp('shapes'), 30, 5, 'voc')}:test"


def noisy_predictions(dataset):
    rng = np.random.default_rng(0)
    return [{"boxes": (r.boxes + rng.normal(0, 4, r.boxes.shape)).astype(np.float32),
             "scores": rng.random(len(r.labels)).astype(np.float32), "labels": r.labels} for r in dataset.records]


def test_eval_prints_table_and_writes_json(spec, tmp_path, capsys):
    dataset = build_dataset(spec)
    predictions = noisy_predictions(dataset)
    results = write_coco_results(tmp_path / "dets.json", dataset, predictions)
    out = tmp_path / "metrics.json"
    assert cli.main(["eval", "--data", spec, "--results", str(results), "--metric", "voc07", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "voc07 = PASCAL VOC2007 11-point AP" in printed and "difficult objects ignored" in printed
    written = json.loads(out.read_text())
    expected = evaluate(dataset, predictions, "voc07")
    assert written["metric"] == "voc07" and written["use_difficult"] is False
    assert written["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    for name in dataset.classes:
        assert f"{name} " in printed
    map_line = next(line for line in printed.splitlines() if line.startswith("mAP"))
    assert f"{expected['mAP']:.4f}" in map_line
    assert "images have detections" not in printed  # every image has some


def test_eval_says_when_the_results_cover_only_some_images(spec, tmp_path, capsys):
    dataset = build_dataset(spec)
    predictions = noisy_predictions(dataset)
    for p in predictions[3:]:  # as `detect infer` on three of the dataset's images writes them
        p.update(boxes=p["boxes"][:0], scores=p["scores"][:0], labels=p["labels"][:0])
    results = write_coco_results(tmp_path / "three.json", dataset, predictions)
    assert cli.main(["eval", "--data", spec, "--results", str(results)]) == 0
    assert f"note: 3 of the {len(dataset)} images have detections in {results}" in capsys.readouterr().out


def test_eval_reads_devkit_folders_and_scores_coco(spec, tmp_path, capsys):
    dataset = build_dataset(spec)
    write_voc_results(tmp_path / "devkit", dataset, noisy_predictions(dataset), split="test")
    code = cli.main(["eval", "--data", spec, "--results", str(tmp_path / "devkit"), "--metric", "coco",
                     "--use-difficult", "--json", str(tmp_path / "m.json")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "difficult objects counted" in printed and "Average Precision  (AP) @[ IoU=0.50:0.95" in printed
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["metric"] == "coco" and written["use_difficult"] is True and len(written["stats"]) == 12


def test_eval_reports_a_malformed_results_file_as_one_line(spec, tmp_path, capsys):
    bad = tmp_path / "dets.json"
    bad.write_text('[{"image_id": "no_such_image", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]')
    assert cli.main(["eval", "--data", spec, "--results", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("detect eval: error:") and str(bad) in err and "unknown image image_id 'no_such_image'" in err
