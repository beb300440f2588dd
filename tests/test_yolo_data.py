"""The `yolo:` spec and `detect convert` to and from it: VOC -> YOLO -> VOC on BCCD keeps every box within
1 px, evaluation on the YOLO copy equals the VOC copy, and bad label files are errors naming file and line."""
from pathlib import Path

import numpy as np
import pytest

from detect.cli import main as cli
from detect.data.spec import build_dataset, devkit_split
from detect.errors import DatasetError, UserError
from detect.evaluation.evaluate import evaluate

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"
needs_bccd = pytest.mark.skipif(not BCCD.is_dir(), reason="../shared/datasets/BCCD not present")


def by_id(dataset) -> dict:
    return {r.image_id: r for r in dataset.records}


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    if not BCCD.is_dir():
        pytest.skip("../shared/datasets/BCCD not present")
    tmp = tmp_path_factory.mktemp("yolo")
    assert cli(["convert", "--data", f"voc:{BCCD}:test", "--data", f"voc:{BCCD}:val", "--format", "yolo",
                "--out", str(tmp / "yolo")]) == 0
    assert cli(["convert", "--data", f"yolo:{tmp / 'yolo' / 'data.yaml'}:test", "--format", "voc",
                "--out", str(tmp / "voc")]) == 0
    return (build_dataset(f"voc:{BCCD}:test"), build_dataset(f"yolo:{tmp / 'yolo' / 'data.yaml'}:test"),
            build_dataset(f"voc:{tmp / 'voc'}:test"), tmp)


@needs_bccd
def test_voc_to_yolo_to_voc_keeps_every_box_within_one_pixel(round_trip, capsys):
    original, yolo, back, tmp = round_trip
    assert yolo.classes == back.classes == original.classes == ["Platelets", "RBC", "WBC"]
    assert set(by_id(yolo)) == set(by_id(back)) == set(by_id(original)) and len(original) == 72
    worst = {"yolo": 0.0, "voc": 0.0}
    for image_id, record in by_id(original).items():
        for name, copy in (("yolo", by_id(yolo)[image_id]), ("voc", by_id(back)[image_id])):
            assert (copy.width, copy.height) == (record.width, record.height)
            np.testing.assert_array_equal(copy.labels, record.labels)
            worst[name] = max(worst[name], float(np.abs(copy.boxes - record.boxes).max(initial=0.0)))
    print(f"max box difference against the VOC original: YOLO copy {worst['yolo']:.2e} px, "
          f"VOC -> YOLO -> VOC {worst['voc']:.2e} px")
    assert max(worst.values()) <= 1.0
    assert sum(len(r.boxes) for r in original.records) == sum(len(r.boxes) for r in back.records) > 900
    # the YOLO copy keeps the original image bytes; val went into its own folder
    assert (tmp / "yolo" / "images" / "test" / "BloodImage_00007.jpg").read_bytes() == \
        (BCCD / "JPEGImages" / "BloodImage_00007.jpg").read_bytes()
    assert len(build_dataset(f"yolo:{tmp / 'yolo' / 'data.yaml'}:val")) == 87


@needs_bccd
def test_evaluation_on_the_yolo_copy_equals_the_voc_copy(round_trip):
    original, yolo, _, _ = round_trip
    rng = np.random.default_rng(0)
    predictions = {}
    for record in original.records:  # ground truth moved by up to 20 px, plus false positives, random scores
        boxes = np.concatenate([record.boxes + rng.uniform(-20, 20, record.boxes.shape),
                                rng.uniform(0, 300, (5, 2)).repeat(2, axis=1) + [0, 0, 60, 60]]).astype(np.float32)
        labels = np.concatenate([record.labels, rng.integers(1, 4, 5)])
        predictions[record.image_id] = {"boxes": boxes, "scores": rng.uniform(0, 1, len(boxes)).astype(np.float32),
                                        "labels": labels.astype(np.int64)}
    for metric in ("voc07", "voc12", "coco"):
        on_voc = evaluate(original, [predictions[i] for i in original.image_ids], metric)
        on_yolo = evaluate(yolo, [predictions[i] for i in yolo.image_ids], metric)
        assert 0.05 < on_voc["mAP"] < 0.95
        assert on_yolo["mAP"] == pytest.approx(on_voc["mAP"], abs=1e-12), metric


def test_shapes_written_as_yolo_read_back_the_same(tmp_path):
    assert cli(["convert", "--shapes", "10", "--seed", "3", "--format", "yolo",
                "--out", str(tmp_path / "y")]) == 0
    for split in ("train", "val", "test"):
        source = build_dataset(f"shapes:10:3:{split}")
        copy = build_dataset(f"yolo:{tmp_path / 'y' / 'data.yaml'}:{split}", source.classes)
        assert copy.image_ids == source.image_ids
        for a, b in zip(source.records, copy.records):
            np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-4)
            np.testing.assert_array_equal(b.labels, a.labels)
        np.testing.assert_array_equal(copy.load_image(0), source.load_image(0))  # lossless PNG
    assert devkit_split(f"yolo:{tmp_path / 'y' / 'data.yaml'}") == "val"


def write_yolo(tmp_path: Path, yaml_text: str, label_text: str | None, size=(40, 30)) -> Path:
    from PIL import Image

    (tmp_path / "images" / "val").mkdir(parents=True)
    Image.new("RGB", size).save(tmp_path / "images" / "val" / "a.png")
    if label_text is not None:
        (tmp_path / "labels" / "val").mkdir(parents=True)
        (tmp_path / "labels" / "val" / "a.txt").write_text(label_text)
    (tmp_path / "data.yaml").write_text(yaml_text)
    return tmp_path / "data.yaml"


NAMES = "names: [cat, dog]\nval: images/val\n"


def test_label_lines_are_read_in_pixels_polygons_as_boxes_and_missing_files_as_no_objects(tmp_path):
    data = write_yolo(tmp_path, "names: {0: cat, 1: dog}\nnc: 2\nval: images/val\n",
                      "1 0.5 0.5 0.5 1.0\n\n0 0.1 0.1 0.3 0.1 0.3 0.4\n0 0.5 0.5 0.0 0.2\n")
    dataset = build_dataset(f"yolo:{data}")
    record = dataset.records[0]
    assert dataset.classes == ["cat", "dog"] and (record.width, record.height) == (40, 30)
    np.testing.assert_allclose(record.boxes, [[10, 0, 30, 30], [4, 3, 12, 12]], atol=1e-5)
    assert record.labels.tolist() == [2, 1] and dataset.skips.counts == {"zero-size boxes (w == 0 or h == 0)": 1}
    (tmp_path / "labels" / "val" / "a.txt").unlink()
    assert len(build_dataset(f"yolo:{data}:val").records[0].boxes) == 0


@pytest.mark.parametrize("yaml_text, label, message", [
    (NAMES, "2 0.5 0.5 0.1 0.1\n", r"a.txt:1: class index 2 is outside names \(0..1\)"),
    (NAMES, "0 0.5 0.5 0.1\n", "a.txt:1: expected 'class cx cy w h'"),
    (NAMES, "0 0.5 half 0.1 0.1\n", "a.txt:1: .* is not 'class cx cy w h' numbers"),
    (NAMES, "0 0.5 0.5 0.1 0.1\n1 0.95 0.5 0.2 0.1\n", "a.txt:2: box .* lies outside the image"),
    (NAMES, "0 0.5 0.5 -0.1 0.1\n", "a.txt:1: negative width or height"),
    (NAMES, "0 nan 0.5 0.1 0.1\n", "a.txt:1: .* NaN or infinity"),
    ("names: [cat, dog]\nnc: 3\nval: images/val\n", "", "data.yaml: nc is 3 but names lists 2 classes"),
    ("val: images/val\n", "", "data.yaml: a YOLO data.yaml needs a 'names' entry"),
    ("names: [cat]\ntrain: images/train\n", "", r"data.yaml: no 'val' split \(splits: train\)"),
    ("names: [cat]\nval: images/nowhere\n", "", "data.yaml: val 'images/nowhere': .* is neither an image folder"),
    ("names: [cat, [dog\n", "", "data.yaml: malformed YAML"),
    ("names: [cat, ../dog]\nval: images/val\n", "", "data.yaml: names: class name '../dog' contains a path separator"),
])
def test_bad_yolo_input_is_an_error_naming_the_file(tmp_path, yaml_text, label, message):
    data = write_yolo(tmp_path, yaml_text, label)
    with pytest.raises(DatasetError, match=message):
        build_dataset(f"yolo:{data}")


def test_missing_yaml_and_bad_spec(tmp_path, capsys):
    with pytest.raises(DatasetError, match="data.yaml: YOLO data.yaml not found"):
        build_dataset(f"yolo:{tmp_path / 'data.yaml'}")
    with pytest.raises(UserError, match="yolo:DATA_YAML"):
        build_dataset("yolo:")
    assert cli(["data-stats", "--data", f"yolo:{tmp_path / 'data.yaml'}"]) == 2
    assert "data.yaml: YOLO data.yaml not found" in capsys.readouterr().err
