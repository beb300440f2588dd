"""Results files round-trip exactly, and malformed ones fail with the file and the problem named."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detect.data.dataset import DetectionDataset, ImageRecord
from detect.errors import UserError
from detect.evaluation.evaluate import evaluate
from detect.evaluation.results import (predictions_to_coco_results, read_coco_results, read_voc_results,
                                       write_coco_results, write_voc_results)


def tiny_dataset(coco_ids: bool = False) -> DetectionDataset:
    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        xy = rng.uniform(0, 60, (3, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (3, 2))], axis=1)
        records.append(ImageRecord(f"im_{i}", Path(f"im_{i}.jpg"), 100, 100, boxes, rng.integers(1, 4, 3),
                                   [False, i == 1, False], [False] * 3, coco_image_id=100 + i if coco_ids else None))
    category_ids = [7, 3, 12] if coco_ids else None
    return DetectionDataset(records, ["cat", "dog", "bird"], name="tiny", category_ids=category_ids)


def random_predictions(dataset: DetectionDataset, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for r in dataset.records:
        boxes = np.concatenate([r.boxes, r.boxes + rng.normal(0, 3, r.boxes.shape)]).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        out.append({"boxes": torch.from_numpy(boxes), "scores": torch.rand(len(boxes), generator=torch.Generator().manual_seed(seed)),
                    "labels": torch.from_numpy(rng.integers(1, 4, len(boxes)))})
    return out


def by_class(pred: dict) -> list[tuple]:
    """Detections of one image as comparable rows; devkit files regroup them by class."""
    rows = zip(np.asarray(pred["labels"]).tolist(), np.asarray(pred["scores"]).tolist(),
               np.asarray(pred["boxes"]).tolist())
    return sorted(rows, key=lambda row: row[0])


@pytest.mark.parametrize("coco_ids", [False, True])
def test_coco_results_json_round_trips_exactly(tmp_path, coco_ids):
    dataset = tiny_dataset(coco_ids)
    predictions = random_predictions(dataset)
    path = write_coco_results(tmp_path / "dets.json", dataset, predictions)
    entries = json.loads(path.read_text())
    assert {type(e["image_id"]) for e in entries} == {int}  # the ids of detect convert's ground truth
    assert {e["image_id"] for e in entries} <= ({r.coco_image_id for r in dataset.records} if coco_ids
                                                 else set(range(len(dataset))))
    assert {e["category_id"] for e in entries} <= ({7, 3, 12} if coco_ids else {1, 2, 3})
    first = predictions[0]
    x1, y1, x2, y2 = first["boxes"][0].tolist()
    assert entries[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])  # [x, y, w, h], 0-based
    back = read_coco_results(path, dataset)
    for original, read in zip(predictions, back):
        np.testing.assert_array_equal(read["boxes"], original["boxes"].numpy())
        np.testing.assert_array_equal(read["scores"], original["scores"].numpy())
        np.testing.assert_array_equal(read["labels"], original["labels"].numpy())


def test_devkit_files_round_trip_exactly_and_hold_voc_coordinates(tmp_path):
    dataset = tiny_dataset()
    predictions = random_predictions(dataset, seed=3)
    paths = write_voc_results(tmp_path, dataset, predictions, split="val")
    assert [p.name for p in paths] == ["comp4_det_val_cat.txt", "comp4_det_val_dog.txt", "comp4_det_val_bird.txt"]
    image_id, score, *voc = paths[0].read_text().splitlines()[0].split()
    first_cat = next((i, k) for i, p in enumerate(predictions) for k, lab in enumerate(p["labels"].tolist()) if lab == 1)
    box = predictions[first_cat[0]]["boxes"][first_cat[1]].double()
    assert image_id == dataset.image_ids[first_cat[0]]
    assert [float(v) for v in voc] == (box + torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)).tolist()
    back = read_voc_results(tmp_path, dataset, split="val")
    for original, read in zip(predictions, back):
        assert by_class(read) == by_class(original)
    for metric in ("voc07", "voc12"):
        assert evaluate(dataset, back, metric)["ap"] == evaluate(dataset, predictions, metric)["ap"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"image_id": "im_0"}', "holds a JSON list of detections"),
    ('[{"image_id": "im_0", "bbox": [0, 0, 1, 1], "score": 0.5}]', "entry 0: needs image_id, category_id"),
    ('[{"image_id": "im_9", "category_id": "cat", "bbox": [0, 0, 1, 1], "score": 0.5}]',
     "entry 0: unknown image image_id 'im_9'"),
    ('[{"image_id": 100, "category_id": "cat", "bbox": [0, 0, 1, 1], "score": 0.5}]',
     "entry 0: unknown image image_id 100"),
    ('[{"image_id": "im_0", "category_id": "cow", "bbox": [0, 0, 1, 1], "score": 0.5}]',
     "entry 0: unknown class category_id 'cow'"),
    ('[{"image_id": "im_0", "category_id": "cat", "bbox": [0, 0, -1, 1], "score": 0.5}]', "entry 0: bad bbox"),
    ('[{"image_id": "im_0", "category_id": "cat", "bbox": [0, 0, 1], "score": 0.5}]', "entry 0: bad bbox"),
    ('[{"image_id": "im_0", "category_id": "cat", "bbox": [0, "a", 1, 1], "score": 0.5}]', "entry 0: bad bbox"),
    ('[{"image_id": "im_0", "category_id": "cat", "bbox": [0, 0, 1, 1], "score": NaN}]',
     "entry 0: score must be a finite number"),
])
def test_malformed_coco_results_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "dets.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        read_coco_results(path, tiny_dataset())
    assert str(path) in str(err.value)


def test_missing_results_file_is_named(tmp_path):
    with pytest.raises(UserError, match="results file not found"):
        read_coco_results(tmp_path / "nope.json", tiny_dataset())


@pytest.mark.parametrize("line, message", [
    ("im_0 0.5 1 1 10", "expected 'image_id score xmin ymin xmax ymax'"),
    ("im_7 0.5 1 1 10 10", "unknown image id 'im_7'"),
    ("im_0 high 1 1 10 10", "score and box must be numbers"),
    ("im_0 0.5 10 1 5 10", "bad box"),
    ("im_0 0.5 1 1 inf 10", "bad box"),
])
def test_malformed_devkit_lines_name_file_and_line(tmp_path, line, message):
    dataset = tiny_dataset()
    write_voc_results(tmp_path, dataset, [{"boxes": [], "scores": [], "labels": []}] * len(dataset))
    path = tmp_path / "comp4_det_test_dog.txt"
    path.write_text("im_1 0.9 1 1 10 10\n" + line + "\n")
    with pytest.raises(UserError, match=message) as err:
        read_voc_results(tmp_path, dataset)
    assert f"{path}:2" in str(err.value)


def test_missing_devkit_class_file_is_named(tmp_path):
    dataset = tiny_dataset()
    write_voc_results(tmp_path, dataset, random_predictions(dataset))
    (tmp_path / "comp4_det_test_bird.txt").unlink()
    with pytest.raises(UserError, match="comp4_det_test_bird.txt: devkit result file for class 'bird' not found"):
        read_voc_results(tmp_path, dataset)


def test_predictions_must_match_the_dataset():
    dataset = tiny_dataset()
    with pytest.raises(UserError, match=r"predictions\[2\]: 2 boxes, 1 scores, 2 labels"):
        predictions_to_coco_results(dataset, [{"boxes": [], "scores": [], "labels": []}] * 2
                                    + [{"boxes": [[0, 0, 1, 1]] * 2, "scores": [0.1], "labels": [1, 1]}]
                                    + [{"boxes": [], "scores": [], "labels": []}])
    bad = random_predictions(dataset)
    bad[3]["scores"][0] = float("nan")
    with pytest.raises(UserError, match=r"predictions\[3\]: boxes and scores must be finite"):
        predictions_to_coco_results(dataset, bad)


def test_results_of_older_versions_with_string_ids_and_class_names_still_read(tmp_path):
    dataset = tiny_dataset(False)
    predictions = random_predictions(dataset)
    entries = json.loads(write_coco_results(tmp_path / "dets.json", dataset, predictions).read_text())
    old_style = [dict(e, image_id=dataset.image_ids[e["image_id"]], category_id=dataset.classes[e["category_id"] - 1])
                 for e in entries]
    (tmp_path / "old.json").write_text(json.dumps(old_style))
    for original, read in zip(predictions, read_coco_results(tmp_path / "old.json", dataset)):
        np.testing.assert_array_equal(read["boxes"], original["boxes"].numpy())
        np.testing.assert_array_equal(read["labels"], original["labels"].numpy())
