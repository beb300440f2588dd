"""`detect data-stats`, `detect convert` and `detect demo --images`, run through detect.cli.main."""
import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from detect import cli

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"


@pytest.mark.skipif(not BCCD.is_dir(), reason="../shared/datasets/BCCD not present")
def test_data_stats_on_bccd_reports_counts_and_the_skips(tmp_path, capsys):
    assert cli.main(["data-stats", "--data", f"voc:{BCCD}", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "images         364" in out and "skipped 2 zero-size boxes" in out
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["objects"] == 4886 and stats["per_class"]["WBC"]["objects"] == 372
    assert sum(stats["skips"].values()) == 2


def test_data_stats_checks_images_of_a_shapes_split(capsys):
    assert cli.main(["data-stats", "--data", "shapes:20:4:test", "--check-images"]) == 0
    out = capsys.readouterr().out
    assert "images         4 " in out and "circle" in out and "images checked 4 decoded" in out


def test_bad_spec_is_one_error_line_and_exit_code_2(capsys):
    assert cli.main(["data-stats", "--data", "pascal:/nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("detect data-stats: error: invalid dataset spec 'pascal:/nowhere'") and err.count("\n") == 1


def test_convert_shapes_then_voc_to_coco_json(tmp_path, capsys):
    assert cli.main(["convert", "--shapes", "10", "--seed", "2", "--format", "voc", "--size", "64",
                     "--out", str(tmp_path / "voc")]) == 0
    assert sorted(p.name for p in (tmp_path / "voc" / "ImageSets" / "Main").iterdir()) == \
        ["test.txt", "train.txt", "trainval.txt", "val.txt"]
    out_json = tmp_path / "trainval.json"
    assert cli.main(["convert", "--data", f"voc:{tmp_path / 'voc'}:trainval", "--out", str(out_json)]) == 0
    assert "wrote 8 images" in capsys.readouterr().out
    coco = COCO(str(out_json))
    assert len(coco.imgs) == 8 and [c["name"] for c in coco.cats.values()] == ["circle", "rectangle", "triangle"]


def test_convert_refuses_an_output_that_is_not_json(tmp_path, capsys):
    assert cli.main(["convert", "--data", "shapes:3", "--out", str(tmp_path / "x.txt")]) == 2
    assert "must end in .json" in capsys.readouterr().err


def test_demo_accepts_the_images_option_of_the_former_placeholder(tmp_path, capsys):
    """The full demo is tests/test_detector_demo.py; here only that `--images` sizes its dataset."""
    overrides = ["train.steps=1", "model.train_scales=[64]", "model.test_scale=64", "model.max_size=128",
                 "model.backbone=vgg11", "model.width=0.0625", "proposals.params={strategy: single}",
                 "proposals.workers=0", "train.progress=false"]
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--images", "10", *overrides]) == 0
    summary = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert summary["voc07"]["num_images"] == 2 and summary["voc07"]["dataset"] == "shapes:10:0:test"
