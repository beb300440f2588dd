"""PASCAL VOC reader: BCCD read as shipped, the 1-based -> 0-based box convention, and every bad input."""
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.data.voc import read_voc, read_voc_dirs
from detect.errors import DatasetError

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"
needs_bccd = pytest.mark.skipif(not BCCD.is_dir(), reason="../shared/datasets/BCCD not present")


def voc_xml(objects, filename="img.png", width=64, height=48):
    """objects: (name, xmin, ymin, xmax, ymax[, difficult]) in VOC 1-based inclusive pixels."""
    body = "".join(
        f"<object><name>{o[0]}</name><difficult>{o[5] if len(o) > 5 else 0}</difficult>"
        f"<bndbox><xmin>{o[1]}</xmin><ymin>{o[2]}</ymin><xmax>{o[3]}</xmax><ymax>{o[4]}</ymax></bndbox></object>"
        for o in objects)
    name = f"<filename>{filename}</filename>" if filename is not None else ""
    return f"<annotation>{name}<size><width>{width}</width><height>{height}</height><depth>3</depth></size>{body}</annotation>"


def make_voc(root: Path, annotations: dict[str, str], splits: dict[str, list[str]] | None = None,
             width=64, height=48) -> Path:
    """A tiny VOC layout: one XML per id, a real PNG per id, optional split files."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for image_id, xml in annotations.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.png"), np.full((height, width, 3), 90, np.uint8))
    for split, ids in (splits or {}).items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


@needs_bccd
def test_bccd_reads_every_image_with_class_counts_and_two_counted_zero_size_skips(caplog):
    with caplog.at_level(logging.WARNING, logger="detect.data.voc"):
        dataset = read_voc(BCCD)
    assert len(dataset) == 364
    assert dataset.classes == ["Platelets", "RBC", "WBC"]
    counts = np.bincount(np.concatenate([r.labels for r in dataset.records]), minlength=4)
    # 4155 RBC annotations in the files, two of them the zero-size boxes of images 338 and 343
    assert counts.tolist() == [0, 361, 4153, 372]
    assert sum(dataset.skips.counts.values()) == 2
    assert "BloodImage_00338.xml" in dataset.skips.summary()
    warnings = [r for r in caplog.records if "zero-size" in r.getMessage()]
    assert len(warnings) == 1 and "skipped 2 zero-size boxes" in warnings[0].getMessage()


@needs_bccd
def test_bccd_trainval_and_test_splits_partition_the_364_images():
    trainval, test = read_voc(BCCD, "trainval"), read_voc(BCCD, "test")
    assert (len(trainval), len(test)) == (292, 72)
    assert not set(trainval.image_ids) & set(test.image_ids)
    assert len(set(trainval.image_ids) | set(test.image_ids)) == 364
    assert trainval.classes == test.classes == ["Platelets", "RBC", "WBC"]


@needs_bccd
def test_bccd_boxes_follow_the_voc_pixel_convention_and_images_load():
    dataset = read_voc(BCCD, "trainval")
    index = dataset.image_ids.index("BloodImage_00000")
    # first object in the file: WBC xmin=260 ymin=177 xmax=491 ymax=376
    assert dataset.records[index].boxes[0].tolist() == [259.0, 176.0, 491.0, 376.0]
    assert dataset.classes[dataset.records[index].labels[0] - 1] == "WBC"
    image, target = dataset[index]
    assert tuple(image.shape) == (3, 480, 640) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    assert target["boxes"].shape[1] == 4 and target["image_id"] == "BloodImage_00000"


def test_border_touching_boxes_are_legal_and_difficult_flags_are_kept(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([("cat", 1, 1, 64, 48), ("dog", 10, 5, 20, 15, 1)])})
    dataset = read_voc(root)
    record = dataset.records[0]
    assert record.boxes.tolist() == [[0, 0, 64, 48], [9, 4, 20, 15]]
    assert record.difficult.tolist() == [False, True]
    assert dataset.classes == ["cat", "dog"] and record.labels.tolist() == [1, 2]
    assert not dataset.skips


def test_given_class_list_sets_the_label_order(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([("cat", 1, 1, 5, 5), ("dog", 2, 2, 9, 9)])})
    dataset = read_voc(root, classes=["dog", "cat"])
    assert dataset.records[0].labels.tolist() == [2, 1]


def test_unknown_class_names_the_file_and_the_class(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([("horse", 1, 1, 5, 5)])})
    with pytest.raises(DatasetError, match=r"a\.xml: unknown class 'horse'"):
        read_voc(root, classes=["cat", "dog"])


def test_swapped_corners_are_an_error(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([("cat", 20, 5, 10, 15)])})
    with pytest.raises(DatasetError, match=r"a\.xml: box \(20, 5, 10, 15\) of 'cat' has xmax < xmin"):
        read_voc(root)


def test_zero_size_box_is_skipped_and_counted(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([("cat", 7, 7, 7, 7), ("cat", 3, 9, 30, 9), ("cat", 1, 1, 5, 5)])})
    dataset = read_voc(root)
    assert dataset.records[0].boxes.tolist() == [[0, 0, 5, 5]]
    assert list(dataset.skips.counts.values()) == [2]
    assert "skipped 2 zero-size boxes" in dataset.skips.summary() and "a.xml" in dataset.skips.summary()


@pytest.mark.parametrize("box", [(0, 1, 5, 5), (1, 1, 65, 5), (1, 1, 5, 49), (-3, 1, 5, 5)])
def test_box_outside_the_image_is_an_error(tmp_path, box):
    root = make_voc(tmp_path, {"a": voc_xml([("cat", *box)])})
    with pytest.raises(DatasetError, match=r"a\.xml: box .* lies outside the 64x48 image"):
        read_voc(root)


def test_malformed_xml_names_the_file(tmp_path):
    root = make_voc(tmp_path, {"a": "<annotation><size><width>64</width></annotation"})
    with pytest.raises(DatasetError, match=r"a\.xml: malformed XML"):
        read_voc(root)


def test_entity_expansion_is_refused_by_defusedxml(tmp_path):
    bomb = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
            "<annotation><filename>&y;</filename></annotation>")
    root = make_voc(tmp_path, {"a": bomb})
    with pytest.raises(DatasetError, match=r"a\.xml: malformed XML"):
        read_voc(root)


@pytest.mark.parametrize("xml, message", [
    ("<annotation><object><name>cat</name></object></annotation>", r"missing <size/width>"),
    (voc_xml([("cat", "one", 1, 5, 5)]), r"<bndbox/xmin> is 'one', not a number"),
    (voc_xml([("cat", 1, 1, 5, 5)]).replace("<bndbox><xmin>1</xmin>", "<bndbox>"), r"missing <bndbox/xmin>"),
    (voc_xml([("", 1, 1, 5, 5)]), r"object 0 has no <name>"),
    (voc_xml([], width=0), r"image size 0x48 is not positive"),
])
def test_missing_or_bad_fields_name_the_file_and_the_field(tmp_path, xml, message):
    root = make_voc(tmp_path, {"a": xml})
    with pytest.raises(DatasetError, match=r"a\.xml: " + message):
        read_voc(root)


def test_id_in_split_file_without_annotation_names_split_file_and_id(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([])}, splits={"train": ["a", "ghost"]})
    with pytest.raises(DatasetError, match=r"train\.txt: image id 'ghost' is listed but .*ghost\.xml does not exist"):
        read_voc(root, "train")


def test_id_listed_twice_is_an_error(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([])}, splits={"train": ["a", "a"]})
    with pytest.raises(DatasetError, match=r"train\.txt: image id 'a' is listed twice"):
        read_voc(root, "train")


def test_empty_difficult_tag_means_not_difficult(tmp_path):
    xml = voc_xml([("cat", 1, 1, 5, 5)]).replace("<difficult>0</difficult>", "<difficult/>")
    assert read_voc(make_voc(tmp_path, {"a": xml})).records[0].difficult.tolist() == [False]


def test_unknown_split_lists_the_available_ones(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([])}, splits={"train": ["a"], "val": ["a"]})
    with pytest.raises(DatasetError, match=r"test\.txt: split file not found \(available splits: train, val\)"):
        read_voc(root, "test")


@pytest.mark.parametrize("filename", ["../../secret.png", "/etc/passwd", "sub/../../x.png"])
def test_filename_escaping_the_images_folder_is_refused(tmp_path, filename):
    root = make_voc(tmp_path, {"a": voc_xml([], filename=filename)})
    with pytest.raises(DatasetError, match=r"a\.xml: image file name .* points outside the images folder"):
        read_voc(root)


def test_missing_and_corrupt_images_fail_at_load_naming_the_file(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([]), "b": voc_xml([], filename="b.png")})
    dataset = read_voc(root)  # parsing does not open images
    (root / "JPEGImages" / "img.png").unlink(missing_ok=True)
    (root / "JPEGImages" / "b.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match=r"img\.png: image file not found"):
        dataset.load_image(0)
    with pytest.raises(DatasetError, match=r"b\.png: not a readable image"):
        dataset.load_image(1)
    with pytest.raises(DatasetError, match=r"img\.png: image file not found"):
        dataset.check_images()


def test_image_size_disagreeing_with_the_annotation_is_an_error(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml([], filename="a.png", width=50)})
    with pytest.raises(DatasetError, match=r"a\.png: image is 64x48 but its annotation says 50x48"):
        read_voc(root).check_images()


def test_loose_folders_with_and_without_an_id_list(tmp_path):
    root = make_voc(tmp_path, {"x1": voc_xml([("cat", 1, 1, 5, 5)], filename=None),
                               "x2": voc_xml([("dog", 2, 2, 6, 6)], filename=None)})
    ids = tmp_path / "ids.txt"
    ids.write_text("x2\n")
    everything = read_voc_dirs(root / "Annotations", root / "JPEGImages")
    listed = read_voc_dirs(root / "Annotations", root / "JPEGImages", ids)
    assert everything.image_ids == ["x1", "x2"] and listed.image_ids == ["x2"]
    # no <filename>: the image is found as <id>.<ext>
    assert everything.records[0].image_path.name == "x1.png"
    assert everything.load_image(0).shape == (48, 64, 3)
