"""COCO numbers equal pycocotools run directly on the same ground-truth and results files."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.data.convert import write_coco_json
from detect.data.dataset import DetectionDataset
from detect.data.spec import build_dataset
from detect.evaluation.coco import COCO_STAT_NAMES
from detect.evaluation.evaluate import evaluate
from detect.evaluation.results import empty_predictions, read_coco_results, write_coco_results

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"


@pytest.fixture(scope="module")
def voc_dataset(tmp_path_factory) -> DetectionDataset:
    """BCCD's test split (shapes in VOC layout without it), a fifth of the objects flagged difficult."""
    if BCCD.is_dir():
        dataset = build_dataset(f"voc:{BCCD}:test")
    else:
        from detect.data.shapes import write_shapes

        dataset = build_dataset(f"voc:{write_shapes(tmp_path_factory.mktemp('shapes'), 40, 3, 'voc')}:test")
    rng = np.random.default_rng(7)
    records = [replace(r, difficult=rng.random(len(r.labels)) < 0.2) for r in dataset.records]
    return DetectionDataset(records, dataset.classes, name=dataset.name)


def jittered_detections(dataset: DetectionDataset, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    predictions = []
    for r in dataset.records:
        source = rng.integers(0, max(len(r.boxes), 1), 3 * len(r.boxes) + 2)
        wh = np.tile(r.boxes[source, 2:] - r.boxes[source, :2], 2) if len(r.boxes) else np.full((len(source), 4), 30.0)
        base = r.boxes[source] if len(r.boxes) else np.tile([10.0, 10.0, 40.0, 40.0], (len(source), 1))
        boxes = np.clip(base + rng.normal(0, 0.12, (len(source), 4)) * wh, 0, [r.width, r.height] * 2)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = r.labels[source] if len(r.labels) else rng.integers(1, dataset.num_classes + 1, len(source))
        wrong = rng.random(len(source)) < 0.15
        labels = np.where(wrong, rng.integers(1, dataset.num_classes + 1, len(source)), labels)
        predictions.append({"boxes": boxes.astype(np.float32), "scores": rng.random(len(source)).astype(np.float32),
                            "labels": labels})
    return predictions


def pycocotools_directly(gt_json: Path, results_json) -> COCOeval:
    gt = COCO(str(gt_json))
    cocoeval = COCOeval(gt, gt.loadRes(str(results_json)), iouType="bbox")
    cocoeval.evaluate()
    cocoeval.accumulate()
    cocoeval.summarize()
    return cocoeval


def assert_same_numbers(ours: dict, direct: COCOeval, classes: list[str], category_ids: list[int]) -> None:
    assert ours["metric"] == "coco"
    for name, value in zip(COCO_STAT_NAMES, direct.stats):
        assert ours["stats"][name] == pytest.approx(value, abs=1e-12), name
    assert ours["mAP"] == pytest.approx(direct.stats[0], abs=1e-12)
    precision = direct.eval["precision"]
    for name, cid in zip(classes, category_ids):
        k = list(direct.params.catIds).index(cid)
        values = precision[:, :, k, 0, -1]
        assert ours["ap"][name] == pytest.approx(values[values > -1].mean(), abs=1e-12), name
        values = precision[0, :, k, 0, -1]
        assert ours["ap50"][name] == pytest.approx(values[values > -1].mean(), abs=1e-12), name


@pytest.mark.parametrize("use_difficult", [False, True])
def test_voc_ground_truth_scores_as_pycocotools_on_the_converted_files(voc_dataset, tmp_path, use_difficult):
    predictions = jittered_detections(voc_dataset, seed=1)
    ours_file = write_coco_results(tmp_path / "dets.json", voc_dataset, predictions)  # the GT file's int ids
    ours = evaluate(voc_dataset, read_coco_results(ours_file, voc_dataset), "coco", use_difficult=use_difficult)
    assert ours["use_difficult"] is use_difficult

    # The same file straight into pycocotools against the ground truth `detect convert` writes.
    gt_json = write_coco_json(voc_dataset, tmp_path / "gt.json", difficult_as_crowd=not use_difficult)
    direct = pycocotools_directly(gt_json, ours_file)
    assert_same_numbers(ours, direct, voc_dataset.classes, voc_dataset.category_ids)
    assert 0.05 < ours["mAP"] < 0.95


def test_coco_dataset_results_file_goes_straight_into_pycocotools(voc_dataset, tmp_path):
    gt_json = write_coco_json(voc_dataset, tmp_path / "gt.json")
    images_dir = voc_dataset.records[0].image_path.parent
    coco_dataset = build_dataset(f"coco:{gt_json}:{images_dir}")
    predictions = jittered_detections(coco_dataset, seed=2)
    results = write_coco_results(tmp_path / "dets.json", coco_dataset, predictions)  # int ids: standard COCO
    ours = evaluate(coco_dataset, read_coco_results(results, coco_dataset), "coco", use_difficult=True)
    assert_same_numbers(ours, pycocotools_directly(gt_json, results), coco_dataset.classes,
                        coco_dataset.category_ids)


def test_no_detections_give_zero_ap_and_pycocotools_output_stays_captured(voc_dataset, capsys):
    result = evaluate(voc_dataset, empty_predictions(len(voc_dataset)), "coco")
    assert result["mAP"] == 0.0 and all(v == 0.0 for v in result["ap"].values())
    assert capsys.readouterr().out == ""
    assert len(result["summary"].splitlines()) == 12 and "maxDets=100" in result["summary"]
