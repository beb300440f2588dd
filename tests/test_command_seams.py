"""A user's chain of commands, end to end on tiny inputs: pretrain -> propose -> train --weights -> test
-> eval, and the test results straight into pycocotools against `detect convert`'s ground truth."""
import contextlib
import io
import json
import logging

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.cli import main as cli
from detect.data.spec import devkit_split
from detect.proposals.selective_search import SelectiveSearch
from detector_setup import tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# the tiny detector's backbone (vgg11, 1/16 width, kaiming init) pretrained on 3 synthetic classes for 2 steps
PRETRAIN = ["model.name=vgg11", "model.width=0.0625", "model.options={init: kaiming}", "data.workers=0",
            "data.synthetic.num_classes=3", "data.synthetic.train_per_class=4", "data.synthetic.val_per_class=1",
            "data.synthetic.size=40", "data.augment.crop_size=32", "data.augment.scale=[32,40]",
            "optim.batch_size=4", "run.epochs=1", "run.max_steps=2", "run.tensorboard=false", "run.progress=false"]


def test_pretrain_propose_train_test_eval_and_pycocotools_agree(tmp_path, monkeypatch, caplog, capsys):
    cache = tmp_path / "proposals"
    config = tiny_config(tmp_path, cache, "fast")
    assert cli(["pretrain", "--config", "configs/pretrain_tiny_cpu.yaml", "--device", "cpu", "--no-eval", *PRETRAIN,
                f"data.root={tmp_path / 'images'}", f"run.out_dir={tmp_path / 'pretrain'}"]) == 0
    for spec in ("shapes:30:0:train", "shapes:30:0:test"):  # proposals first, as a user would
        assert cli(["propose", "--data", spec, "--param", "strategy=single", "--out", str(cache),
                    "--workers", "0", "--no-progress"]) == 0
    monkeypatch.setattr(SelectiveSearch, "propose", lambda self, image: pytest.fail("proposals computed again"))

    with caplog.at_level(logging.WARNING):
        assert cli(["train", "--config", str(config), "--weights", str(tmp_path / "pretrain" / "last.pth")]) == 0
    assert any("left out" in r.getMessage() and "classifier.6.weight" in r.getMessage() for r in caplog.records)
    capsys.readouterr()  # a recipe whose head is wider than the pretrained one: the error says which setting differs
    assert cli(["train", "--config", str(config), "--weights", str(tmp_path / "pretrain" / "last.pth"),
                "model.backbone_options={init: kaiming, fc_width: 64}", f"train.out_dir={tmp_path / 'wide'}"]) != 0
    err = capsys.readouterr().err
    assert "shape mismatches" in err and "pretrained with fc_width default" in err and "asks for fc_width 64" in err
    assert cli(["test", "--config", str(config), "--checkpoint", str(tmp_path / "run" / "last.pth"),
                "--out", str(tmp_path / "test")]) == 0
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert sorted(p.name for p in (tmp_path / "test" / "voc").iterdir()) == [
        f"comp4_det_test_{c}.txt" for c in ("circle", "rectangle", "triangle")]

    # pycocotools on the files alone: detect convert's ground truth + detect test's results
    assert cli(["convert", "--data", "shapes:30:0:test", "--out", str(tmp_path / "gt.json")]) == 0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
        cocoeval = COCOeval(gt, gt.loadRes(str(tmp_path / "test" / "detections.json")), iouType="bbox")
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    assert list(metrics["coco"]["stats"].values()) == pytest.approx(list(cocoeval.stats), abs=1e-12)

    # detect eval on the same results (JSON and devkit folder) gives detect test's numbers
    capsys.readouterr()
    for metric in ("coco", "voc07"):
        for results in ("detections.json", "voc"):
            out = tmp_path / f"eval_{metric}_{results}.json"
            assert cli(["eval", "--data", "shapes:30:0:test", "--results", str(tmp_path / "test" / results),
                        "--metric", metric, "--json", str(out)]) == 0
            tolerance = 1e-6 if results == "voc" else 1e-12  # devkit files round boxes to VOC's 1-based pixels
            assert json.loads(out.read_text())["mAP"] == pytest.approx(metrics[metric]["mAP"], abs=tolerance)


def test_devkit_split_comes_from_the_spec():
    assert devkit_split("voc:/data/VOC2007:trainval") == "trainval"
    assert devkit_split("voc-dirs:/a/Annotations:/a/JPEGImages:/a/lists/val_2019.txt") == "val_2019"
    assert devkit_split("voc-dirs:/a/Annotations:/a/JPEGImages") == "test"
    assert devkit_split("shapes:30:0:val") == "val" and devkit_split("shapes:30:4") == "test"
    assert devkit_split("coco:/a/ann.json:/a/images") == "test"
    assert devkit_split("voc-dirs:/a/Ann:/a/Img:/a/bad name!.txt") == "test"  # not usable in a file name


def test_infer_on_a_folder_with_a_corrupt_image_a_glob_and_a_video_then_eval_reads_it(tmp_path, capsys):
    import cv2
    import shutil

    cache = tmp_path / "proposals"
    config = tiny_config(tmp_path, cache, "fast", train={"steps": 1})
    assert cli(["train", "--config", str(config)]) == 0
    checkpoint = str(tmp_path / "run" / "last.pth")
    assert cli(["convert", "--shapes", "30", "--seed", "0", "--format", "voc", "--out", str(tmp_path / "voc")]) == 0
    test_ids = (tmp_path / "voc" / "ImageSets" / "Main" / "test.txt").read_text().split()
    folder = tmp_path / "in"
    folder.mkdir()
    for image_id in test_ids:
        shutil.copy(tmp_path / "voc" / "JPEGImages" / f"{image_id}.png", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    capsys.readouterr()
    assert cli(["infer", "--checkpoint", checkpoint, str(folder), "--out", str(tmp_path / "out"),
                "--device", "cpu", "--draw-threshold", "0.0"]) == 1
    captured = capsys.readouterr()
    assert "could not read" in captured.err and "broken.jpg" in captured.err and "1 input(s) skipped" in captured.err
    entries = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert {e["image_id"] for e in entries} == set(test_ids)
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == sorted(test_ids)

    # the same images through detect test: detect eval scores infer's file exactly as test's
    data = f"voc:{tmp_path / 'voc'}:test"
    assert cli(["test", "--config", str(config), "--checkpoint", checkpoint, "--data", data,
                "--out", str(tmp_path / "test"), "--metrics", "voc07"]) == 0
    assert cli(["eval", "--data", data, "--results", str(tmp_path / "out" / "detections.json"),
                "--json", str(tmp_path / "infer_eval.json")]) == 0
    expected = json.loads((tmp_path / "test" / "metrics.json").read_text())["voc07"]["mAP"]
    assert json.loads((tmp_path / "infer_eval.json").read_text())["mAP"] == pytest.approx(expected, abs=1e-6)

    # a glob and a video (OpenCV), one output
    frame = cv2.imread(str(folder / f"{test_ids[0]}.png"))
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5,
                             (frame.shape[1], frame.shape[0]))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    assert cli(["infer", "--checkpoint", checkpoint, str(folder / f"{test_ids[1][:-1]}*.png"), str(tmp_path / "clip.avi"),
                "--out", str(tmp_path / "out2"), "--device", "cpu", "--video-stride", "2"]) == 0
    ids = {e["image_id"] for e in json.loads((tmp_path / "out2" / "detections.json").read_text())}
    assert {"clip_f000000", "clip_f000002"} <= ids and "clip_f000001" not in ids
    assert test_ids[1] in ids


def test_weights_of_a_pretrained_backbone_other_than_the_detectors_is_named_before_proposals(tmp_path, capsys,
                                                                                            monkeypatch):
    assert cli(["pretrain", "--config", "configs/pretrain_tiny_cpu.yaml", "--device", "cpu", "--no-eval", *PRETRAIN,
                "run.max_steps=1", f"data.root={tmp_path / 'images'}", f"run.out_dir={tmp_path / 'pretrain'}"]) == 0
    monkeypatch.setattr(SelectiveSearch, "propose", lambda self, image: pytest.fail("proposals computed first"))
    config = tiny_config(tmp_path, tmp_path / "cache", "fast", model={"width": 0.125})
    capsys.readouterr()
    assert cli(["train", "--config", str(config), "--weights", str(tmp_path / "pretrain" / "last.pth")]) == 2
    err = capsys.readouterr().err
    assert "a `detect pretrain` checkpoint of vgg11 width 0.0625, but the detector is vgg11 width 0.125" in err
