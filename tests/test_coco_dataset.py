"""COCO JSON reader and the VOC -> COCO converter: id mapping, crowd handling, bad files, round trips."""
import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from detect.data.coco import read_coco
from detect.data.dataset import DetectionDataset, ImageRecord
from detect.data.convert import dataset_to_coco_dict, write_coco_json
from detect.data.voc import read_voc
from detect.errors import DatasetError

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"
needs_bccd = pytest.mark.skipif(not BCCD.is_dir(), reason="../shared/datasets/BCCD not present")

GOOD = {
    "images": [{"id": 5, "file_name": "p.png", "width": 40, "height": 30},
               {"id": 9, "file_name": "q.png", "width": 40, "height": 30}],
    "categories": [{"id": 12, "name": "zebra"}, {"id": 3, "name": "ant"}],
    "annotations": [
        {"id": 1, "image_id": 5, "category_id": 12, "bbox": [1.5, 2, 10, 8], "iscrowd": 0},
        {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1},
        {"id": 3, "image_id": 9, "category_id": 3, "bbox": [4, 4, 5, 5]},
    ],
}


def write(tmp_path: Path, data, name="ann.json") -> Path:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for file_name in ("p.png", "q.png"):
        cv2.imwrite(str(images / file_name), np.zeros((30, 40, 3), np.uint8))
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_category_ids_map_to_contiguous_labels_sorted_by_id(tmp_path):
    dataset = read_coco(write(tmp_path, GOOD), tmp_path / "images")
    assert dataset.classes == ["ant", "zebra"] and dataset.category_ids == [3, 12]
    assert dataset.image_ids == ["5", "9"] and dataset.records[0].coco_image_id == 5
    assert dataset.records[0].boxes.tolist() == [[1.5, 2, 11.5, 10], [0, 0, 40, 30]]
    assert dataset.records[0].labels.tolist() == [2, 1]


def test_given_classes_set_the_order_and_must_match_the_categories(tmp_path):
    path = write(tmp_path, GOOD)
    dataset = read_coco(path, tmp_path / "images", classes=["zebra", "ant"])
    assert dataset.category_ids == [12, 3] and dataset.records[0].labels.tolist() == [1, 2]
    with pytest.raises(DatasetError, match=r"ann\.json: unknown class\(es\) 'cat'"):
        read_coco(path, tmp_path / "images", classes=["zebra", "ant", "cat"])
    with pytest.raises(DatasetError, match=r"ann\.json: categories 'ant' are not in the given class list"):
        read_coco(path, tmp_path / "images", classes=["zebra"])


def test_crowd_regions_are_kept_for_evaluation_but_not_training(tmp_path):
    dataset = read_coco(write(tmp_path, GOOD), tmp_path / "images")
    assert dataset.target(0)["iscrowd"].tolist() == [False, True]
    image, training = dataset[0]
    assert tuple(image.shape) == (3, 30, 40)
    assert training["boxes"].tolist() == [[1.5, 2, 11.5, 10]] and training["labels"].tolist() == [2]


def test_zero_size_boxes_are_skipped_and_counted(tmp_path):
    data = copy.deepcopy(GOOD)
    data["annotations"][2]["bbox"] = [4, 4, 0, 5]
    dataset = read_coco(write(tmp_path, data), tmp_path / "images")
    assert len(dataset.records[1].boxes) == 0
    assert "skipped 1 zero-size boxes" in dataset.skips.summary() and "annotation id 3" in dataset.skips.summary()


def test_boxes_within_one_pixel_of_the_border_are_clipped(tmp_path):
    data = copy.deepcopy(GOOD)
    data["annotations"][2]["bbox"] = [-0.4, 20, 41.0, 10.5]
    dataset = read_coco(write(tmp_path, data), tmp_path / "images")
    assert dataset.records[1].boxes.tolist() == [[0, 20, 40, 30]]


def mutate(path, value):
    data = copy.deepcopy(GOOD)
    *keys, last = path
    node = data
    for key in keys:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


DELETE = object()


@pytest.mark.parametrize("data, message", [
    ("{not json", r"malformed JSON"),
    ("[1, 2]", r"the top level must be an object"),
    (mutate(["categories"], DELETE), r"missing list 'categories'"),
    (mutate(["images", 1, "width"], DELETE), r"images\[1\] lacks field\(s\) width"),
    (mutate(["annotations", 0, "bbox"], DELETE), r"annotations\[0\] lacks field\(s\) bbox"),
    (mutate(["annotations", 0, "bbox"], [1, 2, 3]), r"annotations\[0\] bbox \[1, 2, 3\] is not \[x, y, w, h\]"),
    (mutate(["annotations", 0, "image_id"], 77), r"annotations\[0\] refers to image_id 77"),
    (mutate(["annotations", 0, "category_id"], 4), r"annotations\[0\] refers to category_id 4"),
    (mutate(["images", 1, "id"], 5), r"duplicate image ids"),
    (mutate(["images", 0, "id"], "five"), r"images id 'five' is not an integer"),
    (mutate(["annotations", 0, "bbox"], [10, 2, -3, 8]), r"\(annotation id 1\): bbox \[10, 2, -3, 8\] has a negative"),
    (mutate(["annotations", 0, "bbox"], [35, 2, 10, 8]), r"\(annotation id 1\): bbox .* lies outside the 40x30 image p\.png"),
    (mutate(["images", 0, "file_name"], "../p.png"), r"image file name '\.\./p\.png' points outside the images folder"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(DatasetError, match=r"ann\.json.*" + message):
        read_coco(path, tmp_path / "images")


def test_missing_json_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.json: COCO annotation file not found"):
        read_coco(tmp_path / "nope.json", tmp_path)


def test_coco_dict_keeps_coco_ids_and_round_trips(tmp_path):
    dataset = read_coco(write(tmp_path, GOOD), tmp_path / "images")
    out = write_coco_json(dataset, tmp_path / "again.json")
    coco = COCO(str(out))
    assert sorted(coco.imgs) == [5, 9] and sorted(coco.cats) == [3, 12]
    assert coco.imgs[5]["file_name"] == "p.png"
    again = read_coco(out, tmp_path / "images")
    assert again.image_ids == dataset.image_ids and again.category_ids == dataset.category_ids
    for a, b in zip(dataset.records, again.records):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.iscrowd, b.iscrowd)


def test_difficult_objects_are_flagged_and_optionally_written_as_crowd(tmp_path):
    record = ImageRecord("img7", tmp_path / "img7.png", 40, 30, boxes=[[0, 0, 10, 10], [5, 5, 20, 25]],
                         labels=[1, 1], difficult=[False, True], iscrowd=[False, False])
    dataset = DetectionDataset([record], ["cat"], name="two cats")
    plain = dataset_to_coco_dict(dataset)
    assert plain["images"] == [{"id": 0, "name": "img7", "file_name": "img7.png", "width": 40, "height": 30}]
    assert [(a["difficult"], a["ignore"], a["iscrowd"]) for a in plain["annotations"]] == [(0, 0, 0), (1, 1, 0)]
    assert plain["annotations"][1]["bbox"] == [5, 5, 15, 20]
    crowd = dataset_to_coco_dict(dataset, difficult_as_crowd=True)
    assert [a["iscrowd"] for a in crowd["annotations"]] == [0, 1]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(plain))
    cv2.imwrite(str(tmp_path / "img7.png"), np.zeros((30, 40, 3), np.uint8))
    again = read_coco(path, tmp_path)
    assert again.image_ids == ["img7"] and again.records[0].difficult.tolist() == [False, True]


@needs_bccd
def test_bccd_converts_to_coco_that_pycocotools_loads_and_reads_back_identically(tmp_path):
    dataset = read_voc(BCCD, "trainval")
    out = write_coco_json(dataset, tmp_path / "bccd_trainval.json")
    coco = COCO(str(out))
    assert len(coco.imgs) == 292 and [c["name"] for c in coco.loadCats(coco.getCatIds())] == dataset.classes
    first = coco.imgs[0]
    assert first["name"] == dataset.image_ids[0] and first["file_name"] == dataset.image_ids[0] + ".jpg"
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[0]))[0]
    x1, y1, x2, y2 = dataset.records[0].boxes[0].tolist()
    assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1] and ann["area"] == (x2 - x1) * (y2 - y1)
    again = read_coco(out, BCCD / "JPEGImages")
    assert again.image_ids == dataset.image_ids and again.classes == dataset.classes
    assert all(np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)
               for a, b in zip(dataset.records, again.records))
    assert again.records[0].image_path == dataset.records[0].image_path
