"""Class names and image ids from annotation files never steer a written file out of its folder."""
import contextlib
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect import cli
from detect.data.coco import read_coco
from detect.data.convert import write_voc_layout
from detect.data.shapes import shapes_split
from detect.data.voc import read_voc
from detect.errors import DatasetError, UserError
from detect.evaluation.results import empty_predictions, write_voc_results

HOSTILE = ["x/../../../../ESCAPED", "../ESCAPED", "..", "a\\..\\ESCAPED", "/tmp/ESCAPED", "sub/ESCAPED"]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def voc_with_class(root: Path, class_name: str) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    xml = (f"<annotation><filename>a.png</filename><size><width>32</width><height>32</height></size>"
           f"<object><name>{class_name}</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax><ymax>20</ymax>"
           "</bndbox></object></annotation>")
    (root / "Annotations" / "a.xml").write_text(xml)
    cv2.imwrite(str(root / "JPEGImages" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    return root


@pytest.mark.parametrize("name", HOSTILE)
def test_voc_reader_refuses_class_names_with_separators_or_dotdot(tmp_path, name):
    root = voc_with_class(tmp_path / "voc", name)
    with pytest.raises(DatasetError, match=r"a\.xml.*class name") as err:
        read_voc(root)
    assert repr(name) in str(err.value)


def test_voc_ids_file_with_a_path_is_refused(tmp_path):
    root = voc_with_class(tmp_path / "voc", "cell")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "bad.txt").write_text("../Annotations/a\n")
    with pytest.raises(DatasetError, match=r"bad\.txt: image id '\.\./Annotations/a' contains a path separator"):
        read_voc(root, "bad")


def test_coco_reader_refuses_hostile_and_duplicate_category_names(tmp_path):
    (tmp_path / "images").mkdir()
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
            "categories": [{"id": 1, "name": "../../ESCAPED"}], "annotations": []}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"ann\.json: categories: class name '\.\./\.\./ESCAPED'"):
        read_coco(tmp_path / "ann.json", tmp_path / "images")
    data["categories"] = [{"id": 1, "name": "cell"}, {"id": 2, "name": "cell"}]
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"ann\.json: duplicate category name\(s\) 'cell'"):
        read_coco(tmp_path / "ann.json", tmp_path / "images")


def test_the_issue_case_convert_and_data_stats_fail_naming_the_file_and_write_nothing(tmp_path, capsys):
    root = voc_with_class(tmp_path / "data" / "voc", "x/../../../../ESCAPED")
    before = files_under(tmp_path)
    assert cli.main(["convert", "--data", f"voc:{root}", "--out", str(tmp_path / "out" / "gt.json")]) == 2
    assert cli.main(["data-stats", "--data", f"voc:{root}", "--json", str(tmp_path / "out" / "s.json")]) == 2
    err = capsys.readouterr().err
    assert err.count(str(root / "Annotations" / "a.xml")) == 2 and "class name" in err
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("name", HOSTILE)
def test_writers_given_hostile_names_anyway_write_nothing_outside_their_folder(tmp_path, name):
    """Defence in depth: a dataset built in Python, past the readers, still cannot escape the output folder."""
    out = tmp_path / "a" / "b" / "out"
    out.mkdir(parents=True)
    escapes = "/" in name or "\\" in name  # '..' alone inside a longer file name is harmless, and written
    refused = pytest.raises(UserError, match="would leave the output folder") if escapes else contextlib.nullcontext()
    dataset = shapes_split(5, 0, "all", image_size=32)
    dataset.classes[0] = name  # test/eval-style writer: devkit files are named after classes
    with refused:
        write_voc_results(out / "voc", dataset, empty_predictions(len(dataset)), split="test")
    dataset = shapes_split(5, 0, "all", image_size=32)
    dataset.records[1] = replace(dataset.records[1], image_id=name)  # convert-style writer: files named after ids
    with refused:
        write_voc_layout(dataset, out / "voc_layout", {"train": [0, 1]})
    with refused:  # split names too
        write_voc_layout(shapes_split(5, 0, "all", image_size=32), out / "voc_layout2", {name: [0]})
    assert all(p.is_relative_to(out) for p in files_under(tmp_path))
    assert not list(Path("/tmp").glob("ESCAPED*"))


def snapshot(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_each_command_writes_only_inside_its_output(tmp_path, monkeypatch, capsys):
    """Run the writing commands one after the other; every file that appears or changes lies under that
    command's output path (the working directory, also inside tmp_path, must stay untouched)."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    voc = tmp_path / "o1"
    results = tmp_path / "dets.json"
    runs = [
        (["convert", "--shapes", "10", "--seed", "1", "--format", "voc", "--size", "64", "--out", str(voc)], voc),
        (["convert", "--data", f"voc:{voc}:test", "--out", str(tmp_path / "o2" / "gt.json")], tmp_path / "o2"),
        (["data-stats", "--data", f"voc:{voc}", "--check-images", "--json", str(tmp_path / "o3" / "s.json")],
         tmp_path / "o3"),
        (["propose", "--data", f"voc:{voc}:test", "--param", "strategy=single", "--out", str(tmp_path / "o4"),
          "--workers", "0", "--eval", "--no-progress"], tmp_path / "o4"),
        (["eval", "--data", f"voc:{voc}:test", "--results", str(results), "--metric", "coco",
          "--json", str(tmp_path / "o5" / "m.json")], tmp_path / "o5"),
    ]
    results.write_text("[]")
    for argv, out in runs:
        before = snapshot(tmp_path)
        assert cli.main(argv) == 0, argv
        after = snapshot(tmp_path)
        written = {p for p, t in after.items() if before.get(p) != t}
        assert written and all(p.is_relative_to(out) for p in written), (argv[0], sorted(written)[:5])
    capsys.readouterr()


def test_train_test_and_infer_write_only_inside_their_outputs(tmp_path, monkeypatch, capsys):
    """The detector's commands too: train writes its run folder and the proposal cache, test and infer
    their --out folder; nothing lands in the working directory or beside the data."""
    import yaml

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    voc, cache, run = tmp_path / "voc", tmp_path / "cache", tmp_path / "run"
    assert cli.main(["convert", "--shapes", "20", "--seed", "2", "--format", "voc", "--size", "64", "--out", str(voc)]) == 0
    config = tmp_path / "cfg" / "tiny.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({
        "data": {"train": [f"voc:{voc}:train"], "val": f"voc:{voc}:val", "test": f"voc:{voc}:test", "workers": 0},
        "proposals": {"params": {"strategy": "single"}, "cache_dir": str(cache), "workers": 0, "max_per_image": 100},
        "model": {"backbone": "vgg11", "width": 0.0625, "train_scales": [64], "test_scale": 64, "max_size": 128,
                  "backbone_options": {"init": "kaiming"}},
        "train": {"steps": 2, "lr": 0.001, "out_dir": str(run), "device": "cpu", "progress": False,
                  "metrics": ["voc07"], "fit_check_images": 4},
    }))
    runs = [
        (["train", "--config", str(config)], [run, cache]),
        (["test", "--config", str(config), "--checkpoint", str(run / "best.pth"), "--out", str(tmp_path / "t")],
         [tmp_path / "t", cache]),
        (["infer", "--checkpoint", str(run / "last.pth"), str(voc / "JPEGImages"), "--out", str(tmp_path / "i")],
         [tmp_path / "i"]),
    ]
    for argv, outs in runs:
        before = snapshot(tmp_path)
        assert cli.main(argv) == 0, argv
        after = snapshot(tmp_path)
        written = {p for p, t in after.items() if before.get(p) != t}
        assert written and all(any(p.is_relative_to(o) for o in outs) for p in written), (argv[0], sorted(written)[:5])
    capsys.readouterr()
