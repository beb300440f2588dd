"""Synthetic shapes: deterministic by seed, sensible objects, exact VOC and COCO round trips."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detect.data.coco import read_coco
from detect.data.shapes import CLASSES, MAX_IOU, ShapesDataset, shapes_split, split_indices, write_shapes
from detect.data.voc import read_voc
from detect.errors import UserError


def test_same_seed_gives_the_same_images_and_boxes_and_another_seed_does_not():
    a, b, c = ShapesDataset(6, seed=3), ShapesDataset(6, seed=3), ShapesDataset(6, seed=4)
    for i in range(6):
        assert np.array_equal(a.records[i].boxes, b.records[i].boxes)
        assert np.array_equal(a.load_image(i), b.load_image(i))
    assert any(not np.array_equal(a.load_image(i), c.load_image(i)) for i in range(6))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_an_image_renders_the_same_alone_as_in_a_larger_set():
    small, large = ShapesDataset(3, seed=1), ShapesDataset(10, seed=1)
    assert np.array_equal(small.load_image(2), large.load_image(2))
    assert np.array_equal(small.records[2].boxes, large.records[2].boxes)


def test_objects_are_few_integer_inside_the_image_and_barely_overlapping():
    dataset = ShapesDataset(60, seed=0, image_size=160)
    assert dataset.classes == CLASSES == ["circle", "rectangle", "triangle"]
    per_image, labels = [], []
    for record in dataset.records:
        boxes = record.boxes
        per_image.append(len(boxes))
        labels.extend(record.labels.tolist())
        assert np.array_equal(boxes, np.round(boxes))
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 160).all()
        sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
        assert sides.min() >= 0.12 * 160 - 3 and sides.max() <= 0.45 * 160
        iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).fill_diagonal_(0)
        assert float(iou.max()) <= MAX_IOU
    assert min(per_image) >= 1 and max(per_image) <= 4 and len(set(per_image)) > 1
    assert set(labels) == {1, 2, 3}


def test_boxes_are_tight_around_the_drawn_shapes():
    dataset = ShapesDataset(8, seed=2)
    for index, (record, layout) in enumerate(zip(dataset.records, dataset.layouts)):
        image = dataset.load_image(index).astype(int)
        last = layout.shapes[-1]  # drawn last, so never occluded
        x1, y1, x2, y2 = record.boxes[-1].astype(int)
        is_shape = (np.abs(image - np.array(last.colour)).sum(axis=2) == 0)
        ys, xs = np.nonzero(is_shape[y1:y2, x1:x2])
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x2 - x1, y2 - y1)
        # clearly visible: the shape's colour is far from the background around it
        assert np.abs(np.array(last.colour) - np.array(layout.background)).sum() >= 150


def test_splits_partition_the_images_60_20_20():
    splits = split_indices(10)
    assert splits["train"] == list(range(6)) and splits["val"] == [6, 7] and splits["test"] == [8, 9]
    assert splits["trainval"] == list(range(8)) and splits["all"] == list(range(10))
    test = shapes_split(10, seed=5, split="test")
    assert test.image_ids == ["shapes_000008", "shapes_000009"]
    assert np.array_equal(test.load_image(0), ShapesDataset(10, seed=5).load_image(8))
    image, target = test[1]  # torchvision-style sample through the base class
    assert tuple(image.shape) == (3, 128, 128) and image.dtype == torch.float32
    assert target["image_id"] == "shapes_000009" and torch.equal(target["boxes"], torch.from_numpy(test.records[1].boxes))
    with pytest.raises(UserError, match=r"the test split of 2 images is empty"):
        shapes_split(2, split="test")


@pytest.mark.parametrize("split", ["train", "test", "trainval"])
def test_voc_layout_round_trips_boxes_labels_and_pixels(tmp_path, split):
    root = write_shapes(tmp_path / "voc", 12, seed=7, fmt="voc")
    original, again = shapes_split(12, 7, split), read_voc(root, split)
    assert again.classes == original.classes and again.image_ids == original.image_ids
    for i, (a, b) in enumerate(zip(original.records, again.records)):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)
        assert np.array_equal(original.load_image(i), again.load_image(i))
    assert not again.skips


def test_coco_layout_round_trips_boxes_labels_and_pixels(tmp_path):
    root = write_shapes(tmp_path / "coco", 12, seed=7, fmt="coco", image_size=96)
    for split in ("train", "val", "test", "trainval"):
        original = shapes_split(12, 7, split, image_size=96)
        again = read_coco(root / "annotations" / f"instances_{split}.json", root / "images")
        assert again.classes == original.classes and again.image_ids == original.image_ids
        for i, (a, b) in enumerate(zip(original.records, again.records)):
            assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)
            assert np.array_equal(original.load_image(i), again.load_image(i))


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="must be positive"):
        ShapesDataset(0)
    with pytest.raises(UserError, match="at least 32 pixels"):
        ShapesDataset(3, image_size=16)
    with pytest.raises(UserError, match=r"unknown output format 'tfrecord'"):
        write_shapes(tmp_path, 3, fmt="tfrecord")
